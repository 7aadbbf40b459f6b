//! Attribute parsing, shared by the three derives, `#[subscriber]` and `#[process_manager]`. Each derive's keys live in its submodule;
//! this module holds what they share: the key names, the one duplicate-key check, and the
//! handling of unknown keys and literal values.
//!
//! Parsing never stops at the first mistake: every problem is recorded in the [`Ctxt`] and the
//! rest of the attribute is still read, so one build reports all of them.

pub mod aggregate;
pub mod event;
pub mod event_set;
pub mod process_manager;
pub mod subscriber;
pub mod time;

use crate::ctxt::Ctxt;
use quote::ToTokens;
use std::fmt::{self, Display};
use syn::meta::ParseNestedMeta;
use syn::{Attribute, Lit, LitInt, LitStr, Path};

/// An attribute or key name, defined once so parsing, error messages and the "expected one
/// of" lists cannot drift apart.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct Symbol(pub &'static str);

impl PartialEq<Symbol> for Path {
    fn eq(&self, symbol: &Symbol) -> bool {
        self.is_ident(symbol.0)
    }
}

impl Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

// Attribute names.
pub const EVENT: Symbol = Symbol("event");
pub const EVENT_SET: Symbol = Symbol("event_set");
pub const AGGREGATE: Symbol = Symbol("aggregate");

// Keys of `#[event(...)]`.
pub const NAME: Symbol = Symbol("name");
pub const VERSION: Symbol = Symbol("version");
pub const PREVIOUS: Symbol = Symbol("previous");
pub const UPCAST: Symbol = Symbol("upcast");
pub const RENAMED_FROM: Symbol = Symbol("renamed_from");
pub const CODEC: Symbol = Symbol("codec");
pub const FIRST_STORED_VERSION: Symbol = Symbol("first_stored_version");

// Keys of `#[event_set(...)]`.
pub const RETIRED: Symbol = Symbol("retired");

// Keys of `#[aggregate(...)]` (it also takes `name`).
pub const EVENTS: Symbol = Symbol("events");
pub const SNAPSHOT: Symbol = Symbol("snapshot");
pub const SCHEMA: Symbol = Symbol("schema");
pub const EVERY: Symbol = Symbol("every");

// Keys of `#[subscriber(...)]`.
pub const DURABLE: Symbol = Symbol("durable");
pub const DELIVER_FROM: Symbol = Symbol("deliver_from");
pub const ACK_WAIT_MS: Symbol = Symbol("ack_wait_ms");
pub const MAX_DELIVER: Symbol = Symbol("max_deliver");
pub const BACKOFF_MS: Symbol = Symbol("backoff_ms");
pub const MAX_ACK_PENDING: Symbol = Symbol("max_ack_pending");
pub const CONCURRENCY: Symbol = Symbol("concurrency");
pub const PARTITIONS: Symbol = Symbol("partitions");
pub const MEMBER_TTL_MS: Symbol = Symbol("member_ttl_ms");
pub const STREAM: Symbol = Symbol("stream");

// Keys of `#[process_manager(...)]` (it also takes `name`), and its handler attributes.
pub const CORRELATE: Symbol = Symbol("correlate");
pub const WITH: Symbol = Symbol("with");
pub const START: Symbol = Symbol("start");
pub const DEADLINE: Symbol = Symbol("deadline");
pub const REJECTED: Symbol = Symbol("rejected");

/// A number written in an attribute, kept with its literal so errors can point at it.
#[derive(Clone)]
pub struct Number<T> {
    pub value: T,
    pub literal: LitInt,
}

/// One key's value: set at most once. This is the single place duplicate keys are detected.
pub struct Slot<'c, T> {
    cx: &'c Ctxt,
    attribute: &'static str,
    key: Symbol,
    value: Option<T>,
    /// A value was written but was bad (and reported): the key is not "missing".
    rejected: bool,
}

impl<'c, T> Slot<'c, T> {
    /// `attribute` names where the key appears in messages, e.g. `#[event]` or `snapshot(...)`.
    pub fn new(cx: &'c Ctxt, attribute: &'static str, key: Symbol) -> Self {
        Slot {
            cx,
            attribute,
            key,
            value: None,
            rejected: false,
        }
    }

    /// Stores `value`, or reports a duplicate at the repeated key (the first one wins).
    pub fn set(&mut self, key_tokens: &Path, value: T) {
        if self.value.is_some() {
            self.cx.error_spanned_by(
                key_tokens,
                format!("duplicate `{}` in {}", self.key, self.attribute),
            );
        } else {
            self.value = Some(value);
        }
    }

    /// Stores a value read by [`string_value`] or [`number_value`]; `None` means the value was
    /// bad and already reported, so there is nothing to store.
    pub fn set_parsed(&mut self, meta: &ParseNestedMeta, parsed: Option<T>) {
        match parsed {
            Some(value) => self.set(&meta.path, value),
            None => self.rejected = true,
        }
    }

    /// The value of a required key. A key never written is reported at `attribute` (when
    /// there is no attribute at all, the caller reports that instead, once).
    pub fn required(self, attribute: Option<impl ToTokens>) -> Option<T> {
        if let (None, false, Some(attribute)) = (&self.value, self.rejected, attribute) {
            self.cx.error_spanned_by(
                attribute,
                format!("missing `{}` in {}", self.key, self.attribute),
            );
        }
        self.value
    }

    pub fn get(self) -> Option<T> {
        self.value
    }
}

/// Calls `each_key` for every `key = value` or `key(...)` inside each `#[<attribute>(...)]` of
/// `attrs`. A malformed attribute is reported and the others are still read.
pub fn for_each_key(
    cx: &Ctxt,
    attrs: &[Attribute],
    attribute: Symbol,
    mut each_key: impl FnMut(&ParseNestedMeta) -> syn::Result<()>,
) {
    for attr in attrs.iter().filter(|attr| *attr.path() == attribute) {
        if let Err(error) = attr.parse_nested_meta(|meta| each_key(&meta)) {
            cx.syn_error(error);
        }
    }
}

/// Reports an unknown key (listing the known ones) and skips its value, so the keys after it
/// are still checked.
pub fn unknown_key(
    cx: &Ctxt,
    meta: &ParseNestedMeta,
    attribute: &str,
    known: &[Symbol],
) -> syn::Result<()> {
    let known: Vec<String> = known.iter().map(|key| format!("`{key}`")).collect();
    cx.error_spanned_by(
        &meta.path,
        format!(
            "unknown key `{}` in {attribute}; expected one of: {}",
            meta.path.to_token_stream(),
            known.join(", ")
        ),
    );
    skip_value(meta)
}

fn skip_value(meta: &ParseNestedMeta) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        meta.value()?.parse::<syn::Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        meta.input.parse::<proc_macro2::Group>()?;
    }
    Ok(())
}

/// Reads `key = "string"`; a literal of another kind is reported and yields `None`.
pub fn string_value(cx: &Ctxt, meta: &ParseNestedMeta) -> syn::Result<Option<LitStr>> {
    match meta.value()?.parse::<Lit>()? {
        Lit::Str(string) => Ok(Some(string)),
        other => {
            cx.error_spanned_by(
                &other,
                format!(
                    "`{}` expects a string literal, like `{} = \"opened\"`",
                    meta.path.to_token_stream(),
                    meta.path.to_token_stream()
                ),
            );
            Ok(None)
        }
    }
}

/// Reads `key = 123` as `T`; a non-integer or out-of-range literal is reported and yields
/// `None`.
pub fn number_value<T>(cx: &Ctxt, meta: &ParseNestedMeta) -> syn::Result<Option<Number<T>>>
where
    T: std::str::FromStr,
    T::Err: Display,
{
    let literal = meta.value()?.parse::<Lit>()?;
    Ok(number_literal(cx, &meta.path, literal))
}

/// Reads one integer literal of `key`'s value as `T` (also each number of a list); a
/// non-integer or out-of-range literal is reported and yields `None`.
pub fn number_literal<T>(cx: &Ctxt, key: &Path, literal: Lit) -> Option<Number<T>>
where
    T: std::str::FromStr,
    T::Err: Display,
{
    let key = key.to_token_stream();
    match literal {
        Lit::Int(literal) => match literal.base10_parse::<T>() {
            Ok(value) => Some(Number { value, literal }),
            Err(error) => {
                cx.error_spanned_by(&literal, format!("`{key}` is out of range: {error}"));
                None
            }
        },
        other => {
            cx.error_spanned_by(
                &other,
                format!("`{key}` expects an integer literal, like `{key} = 1`"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctxt::messages;
    use syn::parse_quote;

    #[test]
    fn slot_reports_duplicates_and_keeps_first() {
        let cx = Ctxt::new();
        let mut slot = Slot::new(&cx, "#[event]", NAME);
        let path: Path = parse_quote!(name);
        slot.set(&path, 1);
        slot.set(&path, 2);
        assert_eq!(slot.get(), Some(1));
        assert_eq!(messages(cx), ["duplicate `name` in #[event]"]);
    }

    #[test]
    fn unknown_keys_are_skipped_and_reported() {
        let cx = Ctxt::new();
        let attrs: Vec<Attribute> =
            vec![parse_quote!(#[event(colour = "red", shape(round), name = "x")])];
        let mut seen = Vec::new();
        for_each_key(&cx, &attrs, EVENT, |meta| {
            if meta.path == NAME {
                seen.push(string_value(&cx, meta)?.map(|s| s.value()));
                Ok(())
            } else {
                unknown_key(&cx, meta, "#[event]", &[NAME])
            }
        });
        assert_eq!(seen, [Some("x".to_owned())]);
        assert_eq!(
            messages(cx),
            [
                "unknown key `colour` in #[event]; expected one of: `name`",
                "unknown key `shape` in #[event]; expected one of: `name`",
            ]
        );
    }

    #[test]
    fn wrong_literal_kinds_are_reported() {
        let cx = Ctxt::new();
        let attrs: Vec<Attribute> = vec![parse_quote!(#[event(name = 3, version = "1")])];
        for_each_key(&cx, &attrs, EVENT, |meta| {
            if meta.path == NAME {
                assert!(string_value(&cx, meta)?.is_none());
            } else {
                assert!(number_value::<u32>(&cx, meta)?.is_none());
            }
            Ok(())
        });
        assert_eq!(
            messages(cx),
            [
                "`name` expects a string literal, like `name = \"opened\"`",
                "`version` expects an integer literal, like `version = 1`",
            ]
        );
    }

    #[test]
    fn out_of_range_numbers_are_reported() {
        let cx = Ctxt::new();
        let attrs: Vec<Attribute> = vec![parse_quote!(#[event(version = 5000000000)])];
        for_each_key(&cx, &attrs, EVENT, |meta| {
            assert!(number_value::<u32>(&cx, meta)?.is_none());
            Ok(())
        });
        assert_eq!(
            messages(cx),
            ["`version` is out of range: number too large to fit in target type"]
        );
    }
}
