//! `#[subscriber(durable = "...", stream = "...", deliver_from = "all" | "new" | N |
//! "<UTC time>", ack_wait_ms = N, max_deliver = N, backoff_ms = [N, ...], max_ack_pending = N,
//! concurrency = N, partitions = N, member_ttl_ms = N)]`.
//!
//! Unlike the derives' attributes, these keys are the attribute macro's own arguments, so a
//! missing key is reported at the attribute itself (the macro's call site).

use super::{
    number_literal, number_value, string_value, unknown_key, Number, Slot, Symbol, ACK_WAIT_MS,
    BACKOFF_MS, CONCURRENCY, DELIVER_FROM, DURABLE, MAX_ACK_PENDING, MAX_DELIVER, MEMBER_TTL_MS,
    PARTITIONS, STREAM,
};
use crate::ctxt::Ctxt;
use proc_macro2::{Span, TokenStream};
use syn::meta::ParseNestedMeta;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Lit, LitStr, Path, Token};

const ATTRIBUTE: &str = "#[subscriber]";
const KEYS: &[Symbol] = &[
    DURABLE,
    STREAM,
    DELIVER_FROM,
    ACK_WAIT_MS,
    MAX_DELIVER,
    BACKOFF_MS,
    MAX_ACK_PENDING,
    CONCURRENCY,
    PARTITIONS,
    MEMBER_TTL_MS,
];

/// Where a new durable consumer starts, as written in `deliver_from = ...`.
pub enum DeliverFrom {
    All,
    New,
    /// A stream position (sequence), kept with its literal for the "starts at 1" check.
    Position(Number<u64>),
    /// The first event stored at or after this UTC time: seconds and nanoseconds since the
    /// Unix epoch.
    Time(u64, u32),
}

/// `backoff_ms = [100, 1000]`.
pub struct Backoff {
    /// The `backoff_ms` key, where an empty list is reported.
    pub key: Path,
    pub delays: Vec<Number<u64>>,
}

/// Everything written in `#[subscriber(...)]`.
pub struct SubscriberAttrs {
    pub durable: Option<LitStr>,
    pub stream: Option<LitStr>,
    pub deliver_from: Option<DeliverFrom>,
    pub ack_wait_ms: Option<Number<u64>>,
    pub max_deliver: Option<Number<u32>>,
    pub backoff_ms: Option<Backoff>,
    pub max_ack_pending: Option<Number<usize>>,
    pub concurrency: Option<Number<usize>>,
    pub partitions: Option<Number<u16>>,
    pub member_ttl_ms: Option<Number<u64>>,
}

pub fn parse(cx: &Ctxt, args: TokenStream) -> SubscriberAttrs {
    let mut durable = Slot::new(cx, ATTRIBUTE, DURABLE);
    let mut stream = Slot::new(cx, ATTRIBUTE, STREAM);
    let mut deliver_from = Slot::new(cx, ATTRIBUTE, DELIVER_FROM);
    let mut ack_wait_ms = Slot::new(cx, ATTRIBUTE, ACK_WAIT_MS);
    let mut max_deliver = Slot::new(cx, ATTRIBUTE, MAX_DELIVER);
    let mut backoff_ms = Slot::new(cx, ATTRIBUTE, BACKOFF_MS);
    let mut max_ack_pending = Slot::new(cx, ATTRIBUTE, MAX_ACK_PENDING);
    let mut concurrency = Slot::new(cx, ATTRIBUTE, CONCURRENCY);
    let mut partitions = Slot::new(cx, ATTRIBUTE, PARTITIONS);
    let mut member_ttl_ms = Slot::new(cx, ATTRIBUTE, MEMBER_TTL_MS);

    // `syn::meta::parser` rejects empty input; `#[subscriber]` reads as "no keys" so the
    // missing `durable` is named instead.
    let parsed = args.is_empty() || {
        let parser = syn::meta::parser(|meta| {
            if meta.path == DURABLE {
                durable.set_parsed(&meta, string_value(cx, &meta)?);
            } else if meta.path == STREAM {
                stream.set_parsed(&meta, string_value(cx, &meta)?);
            } else if meta.path == DELIVER_FROM {
                deliver_from.set_parsed(&meta, deliver_from_value(cx, &meta)?);
            } else if meta.path == ACK_WAIT_MS {
                ack_wait_ms.set_parsed(&meta, number_value(cx, &meta)?);
            } else if meta.path == MAX_DELIVER {
                max_deliver.set_parsed(&meta, number_value(cx, &meta)?);
            } else if meta.path == BACKOFF_MS {
                backoff_ms.set_parsed(&meta, backoff_value(cx, &meta)?);
            } else if meta.path == MAX_ACK_PENDING {
                max_ack_pending.set_parsed(&meta, number_value(cx, &meta)?);
            } else if meta.path == CONCURRENCY {
                concurrency.set_parsed(&meta, number_value(cx, &meta)?);
            } else if meta.path == PARTITIONS {
                partitions.set_parsed(&meta, number_value(cx, &meta)?);
            } else if meta.path == MEMBER_TTL_MS {
                member_ttl_ms.set_parsed(&meta, number_value(cx, &meta)?);
            } else {
                unknown_key(cx, &meta, ATTRIBUTE, KEYS)?;
            }
            Ok(())
        });
        match Parser::parse2(parser, args) {
            Ok(()) => true,
            Err(error) => {
                cx.syn_error(error);
                false
            }
        }
    };

    // After a syntax error the rest of the attribute was not read, so nothing is "missing".
    let attribute = parsed.then(|| syn::Ident::new("subscriber", Span::call_site()));
    SubscriberAttrs {
        durable: durable.required(attribute),
        stream: stream.get(),
        deliver_from: deliver_from.get(),
        ack_wait_ms: ack_wait_ms.get(),
        max_deliver: max_deliver.get(),
        backoff_ms: backoff_ms.get(),
        max_ack_pending: max_ack_pending.get(),
        concurrency: concurrency.get(),
        partitions: partitions.get(),
        member_ttl_ms: member_ttl_ms.get(),
    }
}

/// `"all"`, `"new"`, a stream position or a UTC time.
fn deliver_from_value(cx: &Ctxt, meta: &ParseNestedMeta) -> syn::Result<Option<DeliverFrom>> {
    match meta.value()?.parse::<Lit>()? {
        Lit::Str(choice) if choice.value() == "all" => Ok(Some(DeliverFrom::All)),
        Lit::Str(choice) if choice.value() == "new" => Ok(Some(DeliverFrom::New)),
        Lit::Str(time) if super::time::parse_utc(&time.value()).is_some() => {
            let (seconds, nanos) = super::time::parse_utc(&time.value()).unwrap_or_default();
            Ok(Some(DeliverFrom::Time(seconds, nanos)))
        }
        Lit::Int(position) => {
            Ok(number_literal(cx, &meta.path, Lit::Int(position)).map(DeliverFrom::Position))
        }
        other => {
            cx.error_spanned_by(
                &other,
                "`deliver_from` expects \"all\", \"new\", a stream position like `deliver_from = 42`, or a UTC time like \"2026-01-31T08:00:00Z\"",
            );
            Ok(None)
        }
    }
}

/// `[100, 1000]`: every element is read, so each bad one is reported.
fn backoff_value(cx: &Ctxt, meta: &ParseNestedMeta) -> syn::Result<Option<Backoff>> {
    let input = meta.value()?;
    let content;
    syn::bracketed!(content in input);
    let literals = Punctuated::<Lit, Token![,]>::parse_terminated(&content)?;
    let count = literals.len();
    let delays: Vec<Number<u64>> = literals
        .into_iter()
        .filter_map(|literal| number_literal(cx, &meta.path, literal))
        .collect();
    Ok((delays.len() == count).then(|| Backoff {
        key: meta.path.clone(),
        delays,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctxt::messages;
    use quote::quote;

    #[test]
    fn reads_every_key() {
        let cx = Ctxt::new();
        let attrs = parse(
            &cx,
            quote!(
                durable = "balances",
                deliver_from = "new",
                ack_wait_ms = 1500,
                max_deliver = 3,
                backoff_ms = [100, 1000,],
                max_ack_pending = 64,
                concurrency = 8,
                partitions = 6,
                member_ttl_ms = 3000
            ),
        );
        cx.check().unwrap();
        assert_eq!(attrs.partitions.as_ref().unwrap().value, 6);
        assert_eq!(attrs.member_ttl_ms.as_ref().unwrap().value, 3000);
        assert_eq!(attrs.durable.unwrap().value(), "balances");
        assert!(matches!(attrs.deliver_from, Some(DeliverFrom::New)));
        assert_eq!(attrs.ack_wait_ms.unwrap().value, 1500);
        assert_eq!(attrs.max_deliver.unwrap().value, 3);
        let delays: Vec<u64> = attrs
            .backoff_ms
            .unwrap()
            .delays
            .iter()
            .map(|d| d.value)
            .collect();
        assert_eq!(delays, [100, 1000]);
        assert_eq!(attrs.max_ack_pending.unwrap().value, 64);
        assert_eq!(attrs.concurrency.unwrap().value, 8);
    }

    #[test]
    fn deliver_from_all_or_a_position() {
        let cx = Ctxt::new();
        let all = parse(&cx, quote!(durable = "a", deliver_from = "all"));
        let at = parse(&cx, quote!(durable = "a", deliver_from = 42));
        let since = parse(
            &cx,
            quote!(durable = "a", deliver_from = "1970-01-02T00:00:01Z"),
        );
        cx.check().unwrap();
        assert!(matches!(
            since.deliver_from,
            Some(DeliverFrom::Time(86_401, 0))
        ));
        assert!(matches!(all.deliver_from, Some(DeliverFrom::All)));
        assert!(matches!(at.deliver_from, Some(DeliverFrom::Position(n)) if n.value == 42));
    }

    #[test]
    fn no_arguments_means_missing_durable() {
        let cx = Ctxt::new();
        assert!(parse(&cx, TokenStream::new()).durable.is_none());
        assert_eq!(messages(cx), ["missing `durable` in #[subscriber]"]);
    }

    #[test]
    fn reports_all_mistakes_together() {
        let cx = Ctxt::new();
        let attrs = parse(
            &cx,
            quote!(
                durable = "a",
                durable = "b",
                colour = 1,
                deliver_from = "later",
                backoff_ms = [1, "x"],
                concurrency = -1
            ),
        );
        assert_eq!(attrs.durable.unwrap().value(), "a");
        assert!(attrs.deliver_from.is_none() && attrs.backoff_ms.is_none());
        assert_eq!(
            messages(cx),
            [
                "duplicate `durable` in #[subscriber]",
                "unknown key `colour` in #[subscriber]; expected one of: `durable`, `stream`, `deliver_from`, `ack_wait_ms`, `max_deliver`, `backoff_ms`, `max_ack_pending`, `concurrency`, `partitions`, `member_ttl_ms`",
                "`deliver_from` expects \"all\", \"new\", a stream position like `deliver_from = 42`, or a UTC time like \"2026-01-31T08:00:00Z\"",
                "`backoff_ms` expects an integer literal, like `backoff_ms = 1`",
                "`concurrency` is out of range: invalid digit found in string",
            ]
        );
    }

    #[test]
    fn a_syntax_error_does_not_also_report_missing_keys() {
        let cx = Ctxt::new();
        parse(&cx, quote!(durable "a"));
        assert_eq!(messages(cx), ["expected `=`"]);
    }
}
