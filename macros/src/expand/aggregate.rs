//! `#[derive(Aggregate)]`: the type name, the event set, routing events to `Apply` impls, and
//! the optional snapshot policy.

use super::{parse_input, run, stub_impl_header};
use crate::ast::AggregateState;
use crate::attr::aggregate::SnapshotAttrs;
use crate::valid;
use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

pub fn derive(input: TokenStream) -> TokenStream {
    match parse_input(input) {
        Ok(input) => run(
            &input,
            AggregateState::from_syn,
            valid::check_aggregate,
            impl_aggregate,
            stub,
        ),
        Err(error) => error,
    }
}

fn impl_aggregate(state: &AggregateState) -> TokenStream {
    let (Some(name), Some(events)) = (&state.attrs.name, &state.attrs.events) else {
        // `valid` requires both; this only keeps generation total.
        return stub(state);
    };
    let ident = state.ident;
    // Spanned at `events = ...`: a missing `Apply` impl is reported here, with a note at the
    // event set variant whose bound it is.
    let apply = quote_spanned! {events.span()=>
        <#events as ::jetsource::__private::ApplyEach<Self>>::apply_to(event, self)
    };
    let snapshot = state.attrs.snapshot.as_ref().map(snapshot_items);

    quote! {
        #[automatically_derived]
        impl ::jetsource::__private::Aggregate for #ident {
            const TYPE: &'static ::core::primitive::str = #name;
            type Event = #events;

            fn apply_event(&mut self, event: Self::Event) {
                #apply
            }

            #snapshot
        }
    }
}

/// The policy constant and the JSON snapshot functions, spanned at `snapshot` so state that is
/// not serde-serializable is reported there.
fn snapshot_items(snapshot: &SnapshotAttrs) -> TokenStream {
    let schema = snapshot.schema.as_ref().map_or(1, |schema| schema.value);
    let every = snapshot.every.as_ref().map_or(1, |every| every.value);
    quote_spanned! {snapshot.key.span()=>
        const SNAPSHOT: ::core::option::Option<::jetsource::__private::SnapshotPolicy> =
            ::core::option::Option::Some(::jetsource::__private::SnapshotPolicy {
                schema_version: #schema,
                every: #every,
            });

        fn encode_snapshot(
            &self,
        ) -> ::core::option::Option<
            ::core::result::Result<
                ::jetsource::__private::Vec<::core::primitive::u8>,
                ::jetsource::__private::EncodeError,
            >,
        > {
            ::core::option::Option::Some(::jetsource::__private::encode_snapshot(self))
        }

        fn decode_snapshot(
            bytes: &[::core::primitive::u8],
        ) -> ::core::option::Option<
            ::core::result::Result<Self, ::jetsource::__private::DecodeError>,
        > {
            ::core::option::Option::Some(::jetsource::__private::decode_snapshot(
                <Self as ::jetsource::__private::Aggregate>::TYPE,
                bytes,
            ))
        }
    }
}

/// After an error: the name and event set that were readable (an event set with no events
/// otherwise), applying nothing and never snapshotting.
fn stub(state: &AggregateState) -> TokenStream {
    let header = stub_impl_header(state.original, quote!(::jetsource::__private::Aggregate));
    let name = match &state.attrs.name {
        Some(name) => quote!(#name),
        None => quote!(""),
    };
    let events = match &state.attrs.events {
        Some(events) => quote!(#events),
        None => quote!(::jetsource::__private::NoEvents),
    };
    quote! {
        #header {
            const TYPE: &'static ::core::primitive::str = #name;
            type Event = #events;

            fn apply_event(&mut self, _: Self::Event) {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(input: TokenStream) -> String {
        derive(input).to_string()
    }

    #[test]
    fn generates_type_events_and_apply_routing() {
        let output = expand(quote! {
            #[aggregate(name = "account", events = AccountEvent)]
            struct Account { balance: u64 }
        });
        assert!(output.contains("impl :: jetsource :: __private :: Aggregate for Account"));
        assert!(output.contains("const TYPE : & 'static :: core :: primitive :: str = \"account\""));
        assert!(output.contains("type Event = AccountEvent ;"));
        assert!(output.contains("< AccountEvent as :: jetsource :: __private :: ApplyEach < Self >> :: apply_to (event , self)"));
        assert!(!output.contains("SNAPSHOT"));
    }

    #[test]
    fn snapshot_policy_and_functions() {
        let output = expand(quote! {
            #[aggregate(name = "account", events = AccountEvent, snapshot(schema = 2, every = 100))]
            struct Account;
        });
        assert!(output.contains("SnapshotPolicy { schema_version : 2u32 , every : 100u64 , }"));
        assert!(output.contains(":: jetsource :: __private :: encode_snapshot (self)"));
        assert!(output.contains(":: jetsource :: __private :: decode_snapshot (< Self as :: jetsource :: __private :: Aggregate > :: TYPE , bytes ,)"));
    }

    #[test]
    fn missing_events_stub_uses_no_events() {
        let output = expand(quote! {
            #[aggregate(name = "account")]
            struct Account;
        });
        assert!(output.contains("compile_error ! { \"missing `events` in #[aggregate]\" }"));
        assert!(output.contains("type Event = :: jetsource :: __private :: NoEvents ;"));
        assert!(output.contains("const TYPE : & 'static :: core :: primitive :: str = \"account\""));
    }
}
