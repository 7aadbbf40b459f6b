//! `#[derive(Aggregate)]`: the type name, the event set, routing events to `Apply` impls, and
//! the optional snapshot policy.

use super::{parse_input, run, stub_impl_header, thread_safe};
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
    let (snapshot_fns, snapshot_items) = match &state.attrs.snapshot {
        Some(snapshot) => (snapshot_fns(state, snapshot), snapshot_items(snapshot)),
        None => (TokenStream::new(), TokenStream::new()),
    };
    // The impl header is spanned at the type name: an unmet supertrait (a missing `Default`)
    // is then reported once, there, rather than at the derive and at the name.
    let header = quote_spanned! {ident.span()=>
        #[automatically_derived]
        impl ::jetsource::__private::Aggregate for #ident
    };

    // The impl sits in an anonymous const so the snapshot functions' constant is private to it.
    quote! {
        const _: () = {
            #snapshot_fns

            #header {
                const TYPE: &'static ::core::primitive::str = #name;
                type Event = #events;

                fn apply_event(&mut self, event: #events) {
                    #apply
                }

                #snapshot_items
            }
        };
    }
}

/// The snapshot functions, fetched once into a constant spanned at `snapshot`: state that is
/// not serde-serializable fails that one bound, there.
fn snapshot_fns(state: &AggregateState, snapshot: &SnapshotAttrs) -> TokenStream {
    let ident = state.ident;
    let span = snapshot.key.span();
    // The type argument carries the span too: the compiler reports an unmet bound there.
    let mut spanned_ident = ident.clone();
    spanned_ident.set_span(span);
    quote_spanned! {span=>
        const __JETSOURCE_SNAPSHOT: ::jetsource::__private::SnapshotFns<#ident> =
            ::jetsource::__private::snapshot_fns::<#spanned_ident>();
    }
}

/// The policy constant and the snapshot methods.
fn snapshot_items(snapshot: &SnapshotAttrs) -> TokenStream {
    let schema = snapshot.schema.as_ref().map_or(1, |schema| schema.value);
    let every = snapshot.every.as_ref().map_or(1, |every| every.value);
    quote! {
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
            ::core::option::Option::Some((__JETSOURCE_SNAPSHOT.encode)(self))
        }

        fn decode_snapshot(
            bytes: &[::core::primitive::u8],
        ) -> ::core::option::Option<
            ::core::result::Result<Self, ::jetsource::__private::DecodeError>,
        > {
            ::core::option::Option::Some((__JETSOURCE_SNAPSHOT.decode)(
                <Self as ::jetsource::__private::Aggregate>::TYPE,
                bytes,
            ))
        }
    }
}

/// After an error: the name and event set that were readable (an event set with no events
/// otherwise), applying nothing and never snapshotting.
fn stub(state: &AggregateState) -> TokenStream {
    let supertraits = thread_safe();
    let header = stub_impl_header(
        state.original,
        quote!(::jetsource::__private::Aggregate),
        quote!(::core::default::Default + #supertraits),
    );
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
        assert!(!output.contains("snapshot"));
    }

    #[test]
    fn snapshot_policy_and_functions() {
        let output = expand(quote! {
            #[aggregate(name = "account", events = AccountEvent, snapshot(schema = 2, every = 100))]
            struct Account;
        });
        assert!(output.contains("SnapshotPolicy { schema_version : 2u32 , every : 100u64 , }"));
        assert!(output.contains(
            "const __JETSOURCE_SNAPSHOT : :: jetsource :: __private :: SnapshotFns < Account > = :: jetsource :: __private :: snapshot_fns :: < Account > ()"
        ));
        assert!(output.contains("(__JETSOURCE_SNAPSHOT . encode) (self)"));
        assert!(output.contains("(__JETSOURCE_SNAPSHOT . decode) (< Self as :: jetsource :: __private :: Aggregate > :: TYPE , bytes ,)"));
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
