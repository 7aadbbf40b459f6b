//! `#[aggregate(name = "...", events = EventSet, snapshot(schema = N, every = M))]`.

use super::{
    for_each_key, number_value, string_value, unknown_key, Number, Slot, Symbol, AGGREGATE, EVENTS,
    EVERY, NAME, SCHEMA, SNAPSHOT,
};
use crate::ctxt::Ctxt;
use proc_macro2::TokenStream;
use syn::parse::Parser;
use syn::{Attribute, LitStr, Path, Type};

const ATTRIBUTE: &str = "#[aggregate]";
const KEYS: &[Symbol] = &[NAME, EVENTS, SNAPSHOT];
const SNAPSHOT_ATTRIBUTE: &str = "snapshot(...)";
const SNAPSHOT_KEYS: &[Symbol] = &[SCHEMA, EVERY];

/// Everything written in the `#[aggregate]` attributes of one type.
pub struct AggregateAttrs<'a> {
    /// The first `#[aggregate]` attribute, where "missing key" errors point.
    pub attribute: Option<&'a Attribute>,
    pub name: Option<LitStr>,
    pub events: Option<Type>,
    pub snapshot: Option<SnapshotAttrs>,
}

/// `snapshot(schema = N, every = M)`.
pub struct SnapshotAttrs {
    /// The `snapshot` key itself, where "missing key" errors point.
    pub key: Path,
    pub schema: Option<Number<u32>>,
    pub every: Option<Number<u64>>,
}

pub fn parse<'a>(cx: &Ctxt, attrs: &'a [Attribute]) -> AggregateAttrs<'a> {
    let mut name = Slot::new(cx, ATTRIBUTE, NAME);
    let mut events = Slot::new(cx, ATTRIBUTE, EVENTS);
    let mut snapshot = Slot::new(cx, ATTRIBUTE, SNAPSHOT);

    for_each_key(cx, attrs, AGGREGATE, |meta| {
        if meta.path == NAME {
            name.set_parsed(meta, string_value(cx, meta)?);
        } else if meta.path == EVENTS {
            events.set(&meta.path, meta.value()?.parse()?);
        } else if meta.path == SNAPSHOT {
            snapshot.set(&meta.path, parse_snapshot(cx, meta)?);
        } else {
            unknown_key(cx, meta, ATTRIBUTE, KEYS)?;
        }
        Ok(())
    });

    let attribute = attrs.iter().find(|attr| *attr.path() == AGGREGATE);
    AggregateAttrs {
        attribute,
        name: name.required(attribute),
        events: events.required(attribute),
        snapshot: snapshot.get(),
    }
}

fn parse_snapshot(cx: &Ctxt, meta: &syn::meta::ParseNestedMeta) -> syn::Result<SnapshotAttrs> {
    let mut schema = Slot::new(cx, SNAPSHOT_ATTRIBUTE, SCHEMA);
    let mut every = Slot::new(cx, SNAPSHOT_ATTRIBUTE, EVERY);
    let content;
    syn::parenthesized!(content in meta.input);
    let keys: TokenStream = content.parse()?;
    // `syn::meta::parser` rejects empty parentheses; `snapshot()` reads as "no keys" so the
    // missing keys are named instead.
    if !keys.is_empty() {
        let parser = syn::meta::parser(|inner| {
            if inner.path == SCHEMA {
                schema.set_parsed(&inner, number_value(cx, &inner)?);
            } else if inner.path == EVERY {
                every.set_parsed(&inner, number_value(cx, &inner)?);
            } else {
                unknown_key(cx, &inner, SNAPSHOT_ATTRIBUTE, SNAPSHOT_KEYS)?;
            }
            Ok(())
        });
        Parser::parse2(parser, keys)?;
    }
    Ok(SnapshotAttrs {
        key: meta.path.clone(),
        schema: schema.get(),
        every: every.get(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::ToTokens;
    use syn::parse_quote;

    #[test]
    fn reads_every_key() {
        let attrs: Vec<Attribute> = vec![parse_quote!(
            #[aggregate(name = "account", events = crate::AccountEvent, snapshot(schema = 2, every = 50))]
        )];
        let cx = Ctxt::new();
        let parsed = parse(&cx, &attrs);
        cx.check().unwrap();
        assert_eq!(parsed.name.unwrap().value(), "account");
        assert_eq!(
            parsed.events.to_token_stream().to_string(),
            "crate :: AccountEvent"
        );
        let snapshot = parsed.snapshot.unwrap();
        assert_eq!(snapshot.schema.unwrap().value, 2);
        assert_eq!(snapshot.every.unwrap().value, 50);
    }

    #[test]
    fn reports_unknown_and_duplicate_snapshot_keys() {
        let attrs: Vec<Attribute> = vec![parse_quote!(
            #[aggregate(snapshot(schema = 1, schema = 2, often = 3))]
        )];
        let cx = Ctxt::new();
        let parsed = parse(&cx, &attrs);
        assert_eq!(parsed.snapshot.unwrap().schema.unwrap().value, 1);
        let messages: Vec<String> = cx
            .check()
            .unwrap_err()
            .into_iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(
            messages,
            [
                "duplicate `schema` in snapshot(...)",
                "unknown key `often` in snapshot(...); expected one of: `schema`, `every`",
                "missing `name` in #[aggregate]",
                "missing `events` in #[aggregate]",
            ]
        );
    }
}
