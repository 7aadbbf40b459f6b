//! The rules a derive input must follow before code is generated. Each rule is one small
//! function that records its errors in the [`Ctxt`]; the rules that need more than one type
//! (a previous version's name and version, distinct names in a set) cannot be decided here and
//! become const assertions in the generated code instead (see `expand`).

use crate::ast::{AggregateState, EventSetEnum, EventStruct};
use crate::attr::aggregate::SnapshotAttrs;
use crate::attr::{Number, EVERY, SCHEMA};
use crate::ctxt::Ctxt;
use std::collections::HashSet;
use syn::{Data, DeriveInput, LitStr};

pub fn check_event(cx: &Ctxt, event: &EventStruct) {
    event_is_struct(cx, event.original);
    no_generics(cx, event.original, "Event");
    let attrs = &event.attrs;
    if attrs.attribute.is_none() {
        cx.error_spanned_by(
            event.ident,
            "missing `#[event(name = \"...\", version = N)]` attribute",
        );
        return;
    }
    if let Some(name) = &attrs.name {
        is_subject_token(cx, name, "event name");
    }
    if let Some(version) = &attrs.version {
        version_is_positive(cx, version);
    }
    if let Some(renamed_from) = &attrs.renamed_from {
        is_subject_token(cx, renamed_from, "`renamed_from` name");
        renamed_from_differs_from_name(cx, renamed_from, attrs.name.as_ref());
    }
    match &attrs.previous {
        Some(previous) => first_version_has_no_previous(cx, previous, attrs.version.as_ref()),
        None => {
            if let Some(upcast) = &attrs.upcast {
                needs_previous(cx, upcast, "upcast");
            }
            if let Some(renamed_from) = &attrs.renamed_from {
                needs_previous(cx, renamed_from, "renamed_from");
            }
        }
    }
}

pub fn check_event_set(cx: &Ctxt, set: &EventSetEnum) {
    let Data::Enum(data) = &set.original.data else {
        // An event set is a closed choice between event types, which is what an enum is.
        cx.error_spanned_by(
            set.ident,
            "#[derive(EventSet)] is only for enums whose variants each wrap one event type",
        );
        return;
    };
    no_generics(cx, set.original, "EventSet");
    if set.variants.is_empty() {
        // A set that decodes nothing is certainly a mistake, and an empty enum cannot be
        // constructed, so an aggregate built on it could never change.
        let (enum_token, ident) = (&data.enum_token, set.ident);
        cx.error_spanned_by(
            quote::quote!(#enum_token #ident),
            "an event set needs at least one variant, like `Opened(Opened)`",
        );
    }
    for variant in &set.variants {
        if variant.event_type.is_none() {
            // One unnamed field is what makes the variant *be* its event: `From<Event>`, encode
            // and apply all go through that one value.
            cx.error_spanned_by(
                variant.original,
                format!(
                    "each event set variant must wrap exactly one event type, like `{}({})`",
                    variant.ident, variant.ident
                ),
            );
        }
    }
    retired_names_are_valid(cx, &set.attrs.retired);
}

pub fn check_aggregate(cx: &Ctxt, state: &AggregateState) {
    if let Data::Union(data) = &state.original.data {
        // A union cannot be read safely without knowing which field is live, so it cannot be
        // replayed, snapshotted or defaulted meaningfully.
        cx.error_spanned_by(
            data.union_token,
            "#[derive(Aggregate)] is for structs and enums, not unions",
        );
    }
    no_generics(cx, state.original, "Aggregate");
    let attrs = &state.attrs;
    if attrs.attribute.is_none() {
        cx.error_spanned_by(
            state.ident,
            "missing `#[aggregate(name = \"...\", events = YourEventSet)]` attribute",
        );
        return;
    }
    if let Some(name) = &attrs.name {
        is_subject_token(cx, name, "aggregate name");
    }
    if let Some(snapshot) = &attrs.snapshot {
        snapshot_is_complete(cx, snapshot);
    }
}

/// `#[derive(Event)]` on the event-set enum is a common slip, so the message says what to use.
fn event_is_struct(cx: &Ctxt, input: &DeriveInput) {
    let keyword = match &input.data {
        Data::Struct(_) => return,
        Data::Enum(data) => quote::ToTokens::to_token_stream(&data.enum_token),
        Data::Union(data) => quote::ToTokens::to_token_stream(&data.union_token),
    };
    let ident = &input.ident;
    cx.error_spanned_by(
        quote::quote!(#keyword #ident),
        "#[derive(Event)] is only for structs; to group event types in an enum, use #[derive(EventSet)]",
    );
}

/// Names, versions and codecs are constants of one concrete type; a generic type would share
/// one wire name between many payload shapes, which could not be decoded back.
fn no_generics(cx: &Ctxt, input: &DeriveInput, derive: &str) {
    if !input.generics.params.is_empty() {
        cx.error_spanned_by(
            &input.generics,
            format!("#[derive({derive})] does not support generic types; use a concrete type"),
        );
    }
}

/// Wire names and aggregate names become subject tokens (`events.account.<id>` and headers),
/// and are stored forever. Limiting them to `[A-Za-z0-9_-]+` keeps each exactly one NATS subject
/// token (no `.` separator, no `*`/`>` wildcards, no whitespace) and keeps them stable: nothing
/// in them can be escaped, normalized or renamed by another tool.
fn is_subject_token(cx: &Ctxt, literal: &LitStr, what: &str) {
    let value = literal.value();
    let valid = !value.is_empty()
        && value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
    if !valid {
        cx.error_spanned_by(
            literal,
            format!(
                "{what} {value:?} must be one NATS subject token: non-empty, only ASCII letters, digits, `_` and `-`"
            ),
        );
    }
}

/// Stored versions start at 1; 0 is reserved so "no version" can never be mistaken for one.
fn version_is_positive(cx: &Ctxt, version: &Number<u32>) {
    if version.value == 0 {
        cx.error_spanned_by(&version.literal, "event versions start at 1");
    }
}

/// A previous version must be exactly `version - 1`, which version 1 cannot have.
fn first_version_has_no_previous(cx: &Ctxt, previous: &syn::Type, version: Option<&Number<u32>>) {
    if version.is_some_and(|version| version.value == 1) {
        cx.error_spanned_by(
            previous,
            "version 1 is the first version of an event and cannot have a `previous` version",
        );
    }
}

/// `upcast` and `renamed_from` describe the step from the previous version; without one they
/// would silently do nothing.
fn needs_previous(cx: &Ctxt, key_value: impl quote::ToTokens, key: &str) {
    cx.error_spanned_by(
        key_value,
        format!("`{key}` needs `previous = OlderVersionType` to upcast from"),
    );
}

/// `renamed_from` equal to the current name is not a rename; the author probably meant
/// another name, and the const assertion would otherwise report a confusing mismatch.
fn renamed_from_differs_from_name(cx: &Ctxt, renamed_from: &LitStr, name: Option<&LitStr>) {
    if name.is_some_and(|name| name.value() == renamed_from.value()) {
        cx.error_spanned_by(
            renamed_from,
            "`renamed_from` must be the previous version's other name; this is the event's own name",
        );
    }
}

/// Retired names are matched against stored names, so they follow the same token rule, and a
/// repeated one is a copy-paste mistake.
fn retired_names_are_valid(cx: &Ctxt, retired: &[LitStr]) {
    let mut seen = HashSet::new();
    for name in retired {
        is_subject_token(cx, name, "retired event name");
        if !seen.insert(name.value()) {
            cx.error_spanned_by(
                name,
                format!("retired name {:?} is listed twice", name.value()),
            );
        }
    }
}

/// Both numbers are required: the schema version decides whether a stored snapshot is still
/// readable, and 0 for either is meaningless (schema versions start at 1; snapshotting every 0
/// events would never, or always, happen).
fn snapshot_is_complete(cx: &Ctxt, snapshot: &SnapshotAttrs) {
    match &snapshot.schema {
        None => cx.error_spanned_by(
            &snapshot.key,
            format!("missing `{SCHEMA}` in snapshot(...)"),
        ),
        Some(schema) if schema.value == 0 => {
            cx.error_spanned_by(&schema.literal, "snapshot schema versions start at 1")
        }
        Some(_) => {}
    }
    match &snapshot.every {
        None => cx.error_spanned_by(&snapshot.key, format!("missing `{EVERY}` in snapshot(...)")),
        Some(every) if every.value == 0 => cx.error_spanned_by(
            &every.literal,
            "`every` must be at least 1: a snapshot is taken each `every` events",
        ),
        Some(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    fn messages(cx: Ctxt) -> Vec<String> {
        match cx.check() {
            Ok(()) => Vec::new(),
            Err(error) => error.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    fn event_errors(input: DeriveInput) -> Vec<String> {
        let cx = Ctxt::new();
        check_event(&cx, &EventStruct::from_syn(&cx, &input));
        messages(cx)
    }

    fn event_set_errors(input: DeriveInput) -> Vec<String> {
        let cx = Ctxt::new();
        check_event_set(&cx, &EventSetEnum::from_syn(&cx, &input));
        messages(cx)
    }

    fn aggregate_errors(input: DeriveInput) -> Vec<String> {
        let cx = Ctxt::new();
        check_aggregate(&cx, &AggregateState::from_syn(&cx, &input));
        messages(cx)
    }

    #[test]
    fn a_complete_event_is_valid() {
        let input = parse_quote! {
            #[event(name = "account-opened_2", version = 2, previous = V1, renamed_from = "opened")]
            struct Opened;
        };
        assert!(event_errors(input).is_empty());
    }

    #[test]
    fn event_requires_name_and_version() {
        assert_eq!(
            event_errors(parse_quote!(
                #[event()]
                struct E;
            )),
            [
                "missing `name` in #[event]",
                "missing `version` in #[event]"
            ]
        );
        assert_eq!(
            event_errors(parse_quote!(
                struct E;
            )),
            ["missing `#[event(name = \"...\", version = N)]` attribute"]
        );
    }

    #[test]
    fn event_name_must_be_one_subject_token() {
        for bad in ["a.b", "a b", "*", ">", "", "é"] {
            let errors = event_errors(parse_quote!(
                #[event(name = #bad, version = 1)]
                struct E;
            ));
            assert_eq!(errors.len(), 1, "{bad:?} should be rejected");
            assert!(errors[0].contains("one NATS subject token"));
        }
    }

    #[test]
    fn event_version_rules() {
        assert_eq!(
            event_errors(parse_quote!(
                #[event(name = "e", version = 0)]
                struct E;
            )),
            ["event versions start at 1"]
        );
        assert_eq!(
            event_errors(parse_quote!(
                #[event(name = "e", version = 1, previous = P)]
                struct E;
            )),
            ["version 1 is the first version of an event and cannot have a `previous` version"]
        );
    }

    #[test]
    fn upcast_and_renamed_from_need_previous() {
        assert_eq!(
            event_errors(parse_quote!(
                #[event(name = "e", version = 2, upcast = f, renamed_from = "d")]
                struct E;
            )),
            [
                "`upcast` needs `previous = OlderVersionType` to upcast from",
                "`renamed_from` needs `previous = OlderVersionType` to upcast from",
            ]
        );
        assert_eq!(
            event_errors(parse_quote!(
                #[event(name = "e", version = 2, previous = P, renamed_from = "e")] struct E;
            )),
            ["`renamed_from` must be the previous version's other name; this is the event's own name"]
        );
    }

    #[test]
    fn event_shape_rules() {
        assert_eq!(
            event_errors(parse_quote!(#[event(name = "e", version = 1)] enum E {})),
            ["#[derive(Event)] is only for structs; to group event types in an enum, use #[derive(EventSet)]"]
        );
        assert_eq!(
            event_errors(parse_quote!(
                #[event(name = "e", version = 1)]
                struct E<T>(T);
            )),
            ["#[derive(Event)] does not support generic types; use a concrete type"]
        );
    }

    #[test]
    fn event_set_rules() {
        assert!(event_set_errors(parse_quote!(
            enum S {
                A(A),
                B(b::B),
            }
        ))
        .is_empty());
        assert_eq!(
            event_set_errors(parse_quote!(
                enum S {}
            )),
            ["an event set needs at least one variant, like `Opened(Opened)`"]
        );
        assert_eq!(
            event_set_errors(parse_quote!(
                struct S;
            )),
            ["#[derive(EventSet)] is only for enums whose variants each wrap one event type"]
        );
        assert_eq!(
            event_set_errors(parse_quote!(
                enum S {
                    A,
                    B(B, C),
                }
            )),
            [
                "each event set variant must wrap exactly one event type, like `A(A)`",
                "each event set variant must wrap exactly one event type, like `B(B)`",
            ]
        );
        assert_eq!(
            event_set_errors(parse_quote!(#[event_set(retired("x", "x", "a.b"))] enum S { A(A) })),
            [
                "retired name \"x\" is listed twice",
                "retired event name \"a.b\" must be one NATS subject token: non-empty, only ASCII letters, digits, `_` and `-`",
            ]
        );
    }

    #[test]
    fn aggregate_rules() {
        assert!(aggregate_errors(parse_quote!(
            #[aggregate(name = "account", events = E, snapshot(schema = 1, every = 10))]
            struct A;
        ))
        .is_empty());
        assert_eq!(
            aggregate_errors(parse_quote!(
                #[aggregate()]
                struct A;
            )),
            [
                "missing `name` in #[aggregate]",
                "missing `events` in #[aggregate]"
            ]
        );
        assert_eq!(
            aggregate_errors(parse_quote!(
                #[aggregate(name = "a", events = E, snapshot(schema = 0, every = 0))]
                struct A;
            )),
            [
                "snapshot schema versions start at 1",
                "`every` must be at least 1: a snapshot is taken each `every` events",
            ]
        );
        assert_eq!(
            aggregate_errors(parse_quote!(
                #[aggregate(name = "a", events = E, snapshot())]
                struct A;
            )),
            [
                "missing `schema` in snapshot(...)",
                "missing `every` in snapshot(...)"
            ]
        );
    }
}
