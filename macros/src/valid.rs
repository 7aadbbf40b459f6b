//! The rules a derive input must follow before code is generated. Each rule is one small
//! function that records its errors in the [`Ctxt`]; the rules that need more than one type
//! (a previous version's name and version, distinct names in a set) cannot be decided here and
//! become const assertions in the generated code instead (see `expand`).

mod process_manager;

pub use process_manager::check_process_manager;

use crate::ast::{AggregateState, EventSetEnum, EventStruct, Handler, SubscriberImpl};
use crate::attr::aggregate::SnapshotAttrs;
use crate::attr::subscriber::{Backoff, DeliverFrom, SubscriberAttrs};
use crate::attr::{
    Number, Symbol, CONCURRENCY, EVERY, FIRST_STORED_VERSION, MAX_ACK_PENDING, MAX_DELIVER,
    MEMBER_TTL_MS, PARTITIONS, SCHEMA,
};
use crate::ctxt::Ctxt;
use crate::expand::type_name;
use std::collections::{HashMap, HashSet};
use syn::{Data, DeriveInput, FnArg, LitStr};

/// What every handler looks like, for the messages about handlers.
const HANDLER_SHAPE: &str =
    "async fn name(&self, event: EventType, ctx: &EventContext) -> Result<(), HandlerError>";

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
        Some(previous) => {
            first_version_has_no_previous(cx, previous, attrs.version.as_ref());
            if let Some(first_stored) = &attrs.first_stored_version {
                first_stored_version_without_previous(cx, first_stored);
            }
        }
        None => {
            if let Some(upcast) = &attrs.upcast {
                needs_previous(cx, upcast, "upcast");
            }
            if let Some(renamed_from) = &attrs.renamed_from {
                needs_previous(cx, renamed_from, "renamed_from");
            }
            // Those two already say `previous` is missing; one message per mistake.
            if attrs.upcast.is_none() && attrs.renamed_from.is_none() {
                if let Some(version) = &attrs.version {
                    older_versions_are_readable(cx, version, attrs.first_stored_version.as_ref());
                }
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

pub fn check_subscriber(cx: &Ctxt, sub: &SubscriberImpl) {
    let item = sub.original;
    // The handled event set and the durable name are fixed per type; a generic subscriber
    // would share one durable consumer between different handler sets.
    impl_block_is_inherent_and_concrete(cx, item, sub.ident, "subscriber", "Balances");
    if sub.handlers.is_empty() {
        // A subscriber without handlers would receive nothing; the runtime refuses to start it.
        cx.error_spanned_by(
            &item.self_ty,
            format!("a #[subscriber] impl block needs at least one handler: `{HANDLER_SHAPE}`"),
        );
    }
    for handler in &sub.handlers {
        handler_is_async(cx, &handler.original.sig, "subscriber", HANDLER_SHAPE);
        handler_is_not_generic(cx, &handler.original.sig);
        handler_takes_ref_self(cx, handler);
        handler_takes_event_and_context(cx, handler);
    }
    one_handler_per_event_type(cx, &sub.handlers);
    check_subscriber_attrs(cx, &sub.attrs);
}

fn check_subscriber_attrs(cx: &Ctxt, attrs: &SubscriberAttrs) {
    if let Some(durable) = &attrs.durable {
        is_api_name(cx, durable, "durable name");
    }
    if let Some(stream) = &attrs.stream {
        is_api_name(cx, stream, "stream name");
    }
    if let Some(DeliverFrom::Position(position)) = &attrs.deliver_from {
        // JetStream stream sequences start at 1; position 0 does not exist.
        if position.value == 0 {
            cx.error_spanned_by(&position.literal, "stream positions start at 1");
        }
    }
    if let Some(ack_wait) = &attrs.ack_wait_ms {
        ack_wait_is_long_enough(cx, ack_wait);
    }
    if let Some(backoff) = &attrs.backoff_ms {
        backoff_is_not_empty(cx, backoff);
    }
    // A limit of 0 would never let a single message through.
    if let Some(max_deliver) = &attrs.max_deliver {
        at_least_one(
            cx,
            max_deliver,
            MAX_DELIVER,
            "each event gets at least one attempt",
        );
    }
    if let Some(pending) = &attrs.max_ack_pending {
        at_least_one(
            cx,
            pending,
            MAX_ACK_PENDING,
            "0 would let no message through",
        );
    }
    if let Some(concurrency) = &attrs.concurrency {
        at_least_one(
            cx,
            concurrency,
            CONCURRENCY,
            "0 would handle no event at all",
        );
    }
    scale_out_is_consistent(cx, attrs);
}

/// Partitions are 1 to 1024 (each one a consumer on the server); positions of the event stream
/// do not map onto the partition stream; a member TTL only means something with partitions and
/// must outlast a heartbeat round trip.
fn scale_out_is_consistent(cx: &Ctxt, attrs: &SubscriberAttrs) {
    if let Some(partitions) = &attrs.partitions {
        if !(1..=1024).contains(&partitions.value) {
            cx.error_spanned_by(
                &partitions.literal,
                format!("`{PARTITIONS}` must be between 1 and 1024"),
            );
        }
        if let Some(DeliverFrom::Position(position)) = &attrs.deliver_from {
            cx.error_spanned_by(
                &position.literal,
                format!("`deliver_from = <position>` cannot be used with `{PARTITIONS}`: partition consumers count positions of their own stream"),
            );
        }
    }
    if let Some(ttl) = &attrs.member_ttl_ms {
        if attrs.partitions.is_none() {
            cx.error_spanned_by(
                &ttl.literal,
                format!("`{MEMBER_TTL_MS}` only applies with `{PARTITIONS} = N`"),
            );
        } else if ttl.value < 500 {
            cx.error_spanned_by(
                &ttl.literal,
                format!("`{MEMBER_TTL_MS}` must be at least 500"),
            );
        }
    }
}

/// The macro writes the trait impl itself from the handlers (a trait impl has no room for
/// handlers of its own choosing), fixed per type, and names the generated event set after the
/// type. `attribute` names the macro, `example` a type for the message.
fn impl_block_is_inherent_and_concrete(
    cx: &Ctxt,
    item: &syn::ItemImpl,
    ident: Option<&syn::Ident>,
    attribute: &str,
    example: &str,
) {
    if let Some((_, trait_path, _)) = &item.trait_ {
        cx.error_spanned_by(
            trait_path,
            format!("#[{attribute}] goes on an inherent `impl Type {{ ... }}` block of handlers, not on a trait impl"),
        );
    }
    if !item.generics.params.is_empty() {
        cx.error_spanned_by(
            &item.generics,
            format!("#[{attribute}] does not support generic impl blocks; use a concrete type"),
        );
    }
    if ident.is_none() {
        cx.error_spanned_by(
            &item.self_ty,
            format!("#[{attribute}] needs a named type, like `impl {example} {{ ... }}`"),
        );
    }
}

/// The runtime awaits each handler's future; a plain `fn` would have to block a worker thread.
/// `attribute` names the block's attribute and `shape` the handler it expects.
fn handler_is_async(cx: &Ctxt, sig: &syn::Signature, attribute: &str, shape: &str) {
    if sig.asyncness.is_none() {
        let (fn_token, ident) = (&sig.fn_token, &sig.ident);
        cx.error_spanned_by(
            quote::quote!(#fn_token #ident),
            format!(
                "handler `{ident}` must be an `async fn`; every method of a #[{attribute}] impl block is a handler: `{shape}`"
            ),
        );
    }
}

/// The generated dispatch names each handler with no type arguments to choose.
fn handler_is_not_generic(cx: &Ctxt, sig: &syn::Signature) {
    let generics = &sig.generics;
    if !generics.params.is_empty() || generics.where_clause.is_some() {
        cx.error_spanned_by(
            generics,
            format!("handler `{}` cannot be generic", sig.ident),
        );
    }
}

/// The runtime shares one subscriber between concurrent handlers (`Subscriber::handle` takes
/// `&self`): `&mut self` could not be given, and `self` would consume it.
fn handler_takes_ref_self(cx: &Ctxt, handler: &Handler) {
    let sig = &handler.original.sig;
    match sig.inputs.first() {
        Some(FnArg::Receiver(receiver))
            if receiver.colon_token.is_none()
                && receiver.reference.is_some()
                && receiver.mutability.is_none() => {}
        Some(FnArg::Receiver(receiver)) => cx.error_spanned_by(
            receiver,
            format!(
                "handler `{}` must take `&self`: handlers run concurrently on a shared subscriber",
                handler.ident
            ),
        ),
        Some(FnArg::Typed(_)) | None => cx.error_spanned_by(
            &sig.ident,
            format!(
                "handler `{}` must be a method taking `&self`: `{HANDLER_SHAPE}`",
                handler.ident
            ),
        ),
    }
}

/// The dispatch passes exactly two values: the upcast event and its context.
fn handler_takes_event_and_context(cx: &Ctxt, handler: &Handler) {
    let sig = &handler.original.sig;
    let params: Vec<&FnArg> = sig
        .inputs
        .iter()
        .filter(|input| matches!(input, FnArg::Typed(_)))
        .collect();
    if params.len() < 2 {
        let missing = if params.is_empty() {
            "the event and its context"
        } else {
            "the event context `ctx: &EventContext`"
        };
        let at = match sig.inputs.last() {
            Some(_) => quote::ToTokens::to_token_stream(&sig.inputs),
            None => quote::ToTokens::to_token_stream(&sig.ident),
        };
        cx.error_spanned_by(
            at,
            format!(
                "handler `{}` is missing {missing}: `{HANDLER_SHAPE}`",
                handler.ident
            ),
        );
    } else if params.len() > 2 {
        let extra = &params[2..];
        cx.error_spanned_by(
            quote::quote!(#(#extra),*),
            format!(
                "handler `{}` takes only the event and its context: `{HANDLER_SHAPE}`",
                handler.ident
            ),
        );
    }
}

/// The event type decides which handler runs; two handlers for one type would make one of
/// them unreachable. Types are compared as written; two spellings of one type (an alias, a
/// longer path) are still caught by the event set's distinct-name assertion.
fn one_handler_per_event_type(cx: &Ctxt, handlers: &[Handler]) {
    let mut seen: HashMap<String, &Handler> = HashMap::new();
    for handler in handlers {
        let Some(event_type) = handler.event_type else {
            continue;
        };
        let name = type_name(event_type);
        match seen.get(&name) {
            Some(first) => cx.error_spanned_by(
                event_type,
                format!(
                    "`{name}` already has a handler, `{}`; each event type gets exactly one handler",
                    first.ident
                ),
            ),
            None => {
                seen.insert(name, handler);
            }
        }
    }
}

/// Durable and stream names are one token of the server's API subjects
/// (`$JS.API.CONSUMER.INFO.<stream>.<durable>`), limited like the runtime limits them.
fn is_api_name(cx: &Ctxt, name: &LitStr, what: &str) {
    let value = name.value();
    let valid = !value.is_empty()
        && value.len() <= 100
        && value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
    if !valid {
        cx.error_spanned_by(
            name,
            format!("{what} {value:?} must be 1 to 100 characters of A-Z a-z 0-9 _ -"),
        );
    }
}

/// In-progress acks go out every half ack wait; below 100 ms they would flood the server (the
/// runtime refuses such a configuration at start).
fn ack_wait_is_long_enough(cx: &Ctxt, ack_wait: &Number<u64>) {
    if ack_wait.value < 100 {
        cx.error_spanned_by(&ack_wait.literal, "`ack_wait_ms` must be at least 100");
    }
}

/// Retries wait for the next delay of the list; an empty list has none to give.
fn backoff_is_not_empty(cx: &Ctxt, backoff: &Backoff) {
    if backoff.delays.is_empty() {
        cx.error_spanned_by(
            &backoff.key,
            "`backoff_ms` needs at least one delay, like `backoff_ms = [1000]`",
        );
    }
}

fn at_least_one<T: PartialEq + From<u8>>(cx: &Ctxt, number: &Number<T>, key: Symbol, why: &str) {
    if number.value == T::from(0) {
        cx.error_spanned_by(
            &number.literal,
            format!("`{key}` must be at least 1: {why}"),
        );
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

/// A version above 1 without `previous` could not decode the older versions already stored:
/// they would fail at run time with `UnknownVersion`. That is only right when no older version
/// was ever stored, which the author says with `first_stored_version = <this version>`. The
/// number is repeated on purpose: when the event later moves to the next version and the
/// author forgets `previous`, the stale `first_stored_version` no longer matches and this
/// rule fires again.
fn older_versions_are_readable(
    cx: &Ctxt,
    version: &Number<u32>,
    first_stored: Option<&Number<u32>>,
) {
    let current = version.value;
    if current == 0 {
        // Reported by `version_is_positive`.
        return;
    }
    match first_stored {
        None if current > 1 => {
            let older = current - 1;
            cx.error_spanned_by(
                &version.literal,
                format!(
                    "`version = {current}` needs `previous = <the version {older} type>` so stored \
                     version {older} events can still be decoded; if no older version of this \
                     event was ever stored, say so with `{FIRST_STORED_VERSION} = {current}`"
                ),
            );
        }
        None => {}
        Some(first_stored) if first_stored.value != current => {
            let written = first_stored.value;
            let instead = match current - 1 {
                0 => String::new(),
                older => format!(
                    "; if version {older} events were stored, name their type with `previous` instead"
                ),
            };
            cx.error_spanned_by(
                &first_stored.literal,
                format!(
                    "`{FIRST_STORED_VERSION} = {written}` must equal `version` ({current}): it \
                     says no version before this one was ever stored{instead}"
                ),
            );
        }
        Some(_) => {}
    }
}

/// With `previous`, the chain itself says which versions are readable; the opt-out belongs on
/// the chain's oldest type.
fn first_stored_version_without_previous(cx: &Ctxt, first_stored: &Number<u32>) {
    cx.error_spanned_by(
        &first_stored.literal,
        format!(
            "`{FIRST_STORED_VERSION}` cannot be used with `previous`, which says older versions \
             were stored; put it on the oldest version of the chain, the one without `previous`"
        ),
    );
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
    use crate::ctxt::messages;
    use syn::parse_quote;

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
    fn a_later_version_needs_previous_or_first_stored_version() {
        assert_eq!(
            event_errors(parse_quote!(
                #[event(name = "e", version = 2)]
                struct E;
            )),
            ["`version = 2` needs `previous = <the version 1 type>` so stored version 1 events can still be decoded; if no older version of this event was ever stored, say so with `first_stored_version = 2`"]
        );
        assert!(event_errors(parse_quote!(
            #[event(name = "e", version = 2, first_stored_version = 2)]
            struct E;
        ))
        .is_empty());
        assert!(event_errors(parse_quote!(
            #[event(name = "e", version = 1, first_stored_version = 1)]
            struct E;
        ))
        .is_empty());
        assert_eq!(
            event_errors(parse_quote!(
                #[event(name = "e", version = 3, first_stored_version = 2)]
                struct E;
            )),
            ["`first_stored_version = 2` must equal `version` (3): it says no version before this one was ever stored; if version 2 events were stored, name their type with `previous` instead"]
        );
        assert_eq!(
            event_errors(parse_quote!(
                #[event(name = "e", version = 1, first_stored_version = 2)]
                struct E;
            )),
            ["`first_stored_version = 2` must equal `version` (1): it says no version before this one was ever stored"]
        );
        assert_eq!(
            event_errors(parse_quote!(
                #[event(name = "e", version = 3, previous = P, first_stored_version = 3)]
                struct E;
            )),
            ["`first_stored_version` cannot be used with `previous`, which says older versions were stored; put it on the oldest version of the chain, the one without `previous`"]
        );
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
