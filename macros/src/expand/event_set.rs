//! `#[derive(EventSet)]`: encode and decode by variant, `From` each event type, and the
//! `ApplyEach` routing the aggregate derive relies on.

use super::{const_assert, parse_input, run, stub_impl_header, thread_safe, type_name};
use crate::ast::EventSetEnum;
use crate::valid;
use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Ident, Type};

pub fn derive(input: TokenStream) -> TokenStream {
    match parse_input(input) {
        Ok(input) => run(
            &input,
            EventSetEnum::from_syn,
            valid::check_event_set,
            impl_event_set,
            stub,
        ),
        Err(error) => error,
    }
}

/// A variant already checked to wrap one event type.
struct Member<'a> {
    variant: &'a Ident,
    event: &'a Type,
}

fn impl_event_set(set: &EventSetEnum) -> TokenStream {
    let members: Vec<Member> = set
        .variants
        .iter()
        .filter_map(|variant| {
            Some(Member {
                variant: variant.ident,
                event: variant.event_type?,
            })
        })
        .collect();
    let ident = set.ident;
    let variants: Vec<&Ident> = members.iter().map(|member| member.variant).collect();
    let events: Vec<&Type> = members.iter().map(|member| member.event).collect();
    let retired = &set.attrs.retired;
    let drop_retired = if retired.is_empty() {
        TokenStream::new()
    } else {
        quote! {
            if ::core::matches!(raw.name, #(#retired)|*) {
                return ::core::result::Result::Ok(::core::option::Option::None);
            }
        }
    };
    let apply_each = impl_apply_each(ident, &members);
    let assertions = distinct_names(set, &members);

    quote! {
        #[automatically_derived]
        impl ::jetsource::__private::EventSet for #ident {
            const NAMES: &'static [&'static ::core::primitive::str] =
                &[#(<#events as ::jetsource::__private::Event>::NAME),*];

            fn encode(
                &self,
            ) -> ::core::result::Result<
                ::jetsource::__private::EncodedEvent,
                ::jetsource::__private::EncodeError,
            > {
                match self {
                    #(Self::#variants(event) => <#events as ::jetsource::__private::Event>::encode(event),)*
                }
            }

            fn decode(
                raw: ::jetsource::__private::RawEvent<'_>,
            ) -> ::core::result::Result<
                ::core::option::Option<Self>,
                ::jetsource::__private::DecodeError,
            > {
                // Declaration order decides if two lineages claim one name; the const
                // assertions below rule that out for the current names.
                #(
                    if <#events as ::jetsource::__private::Event>::is_known_name(raw.name) {
                        return ::core::result::Result::map(
                            <#events as ::jetsource::__private::Event>::decode_stored(raw),
                            |event| ::core::option::Option::Some(Self::#variants(event)),
                        );
                    }
                )*
                #drop_retired
                ::core::result::Result::Err(::jetsource::__private::unknown_event(raw))
            }

            fn event_name(&self) -> &'static ::core::primitive::str {
                match self {
                    #(Self::#variants(_) => <#events as ::jetsource::__private::Event>::NAME,)*
                }
            }

            fn known_names() -> ::jetsource::__private::Vec<&'static ::core::primitive::str> {
                ::jetsource::__private::distinct_names([
                    #(<#events as ::jetsource::__private::Event>::known_names(),)*
                ])
            }
        }

        #(
            #[automatically_derived]
            impl ::core::convert::From<#events> for #ident {
                fn from(event: #events) -> Self {
                    Self::#variants(event)
                }
            }
        )*

        #apply_each
        #assertions
    }
}

/// `impl<S> ApplyEach<S>` with one `S: Apply<Event>` bound per variant, each spanned at the
/// variant's type: a missing `Apply` impl is then reported at the variant that needs it.
fn impl_apply_each(ident: &Ident, members: &[Member]) -> TokenStream {
    // An unusual name, so it cannot capture a user type named like a common parameter.
    let state = quote!(__JetsourceState);
    let bounds = members.iter().map(|member| {
        let event = member.event;
        quote_spanned!(event.span()=> #state: ::jetsource::__private::Apply<#event>)
    });
    let arms = members.iter().map(|member| {
        let (variant, event) = (member.variant, member.event);
        quote! {
            Self::#variant(event) => <#state as ::jetsource::__private::Apply<#event>>::apply(state, event),
        }
    });
    quote! {
        #[automatically_derived]
        impl<#state> ::jetsource::__private::ApplyEach<#state> for #ident
        where
            #(#bounds,)*
        {
            fn apply_to(self, state: &mut #state) {
                match self {
                    #(#arms)*
                }
            }
        }
    }
}

/// Decoding picks the variant by wire name, so two variants with one name (or a variant named
/// like a retired event) would make one of them unreachable. The names are other types'
/// constants, hence const assertions, spanned at the later of the two.
fn distinct_names(set: &EventSetEnum, members: &[Member]) -> TokenStream {
    let ident = set.ident;
    let mut assertions = TokenStream::new();
    for (index, later) in members.iter().enumerate() {
        for earlier in &members[..index] {
            let (a, b) = (earlier.event, later.event);
            assertions.extend(const_assert(
                b.span(),
                quote! {
                    !::jetsource::__private::str_eq(
                        <#a as ::jetsource::__private::Event>::NAME,
                        <#b as ::jetsource::__private::Event>::NAME,
                    )
                },
                &format!(
                    "event set `{ident}`: variants `{}` and `{}` have the same wire name; `{}` and `{}` need distinct names",
                    earlier.variant, later.variant, type_name(a), type_name(b)
                ),
            ));
        }
        for retired in &set.attrs.retired {
            let event = later.event;
            assertions.extend(const_assert(
                retired.span(),
                quote! {
                    !::jetsource::__private::str_eq(
                        <#event as ::jetsource::__private::Event>::NAME,
                        #retired,
                    )
                },
                &format!(
                    "event set `{ident}`: retired name {:?} is the wire name of variant `{}`; a name in use cannot be retired",
                    retired.value(),
                    later.variant
                ),
            ));
        }
    }
    assertions
}

/// After an error: an event set that knows no names (its bodies never run: the crate does not
/// compile).
fn stub(set: &EventSetEnum) -> TokenStream {
    let header = stub_impl_header(
        set.original,
        quote!(::jetsource::__private::EventSet),
        thread_safe(),
    );
    quote! {
        #header {
            const NAMES: &'static [&'static ::core::primitive::str] = &[];

            fn encode(
                &self,
            ) -> ::core::result::Result<
                ::jetsource::__private::EncodedEvent,
                ::jetsource::__private::EncodeError,
            > {
                ::core::result::Result::Err(::jetsource::__private::derive_failed(""))
            }

            fn decode(
                raw: ::jetsource::__private::RawEvent<'_>,
            ) -> ::core::result::Result<
                ::core::option::Option<Self>,
                ::jetsource::__private::DecodeError,
            > {
                ::core::result::Result::Err(::jetsource::__private::unknown_event(raw))
            }

            fn event_name(&self) -> &'static ::core::primitive::str {
                ""
            }
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
    fn generates_dispatch_from_and_apply_each() {
        let output = expand(quote! {
            #[event_set(retired("legacy"))]
            enum AccountEvent { Opened(Opened), Deposited(money::Deposited) }
        });
        assert!(output.contains("impl :: jetsource :: __private :: EventSet for AccountEvent"));
        assert!(output.contains("Self :: Opened (event) => < Opened as :: jetsource :: __private :: Event > :: encode (event)"));
        assert!(output.contains("< money :: Deposited as :: jetsource :: __private :: Event > :: is_known_name (raw . name)"));
        assert!(output.contains(":: core :: matches ! (raw . name , \"legacy\")"));
        assert!(output.contains("distinct_names ([< Opened as :: jetsource :: __private :: Event > :: known_names () , < money :: Deposited as :: jetsource :: __private :: Event > :: known_names () ,])"));
        assert!(output
            .contains("impl :: core :: convert :: From < money :: Deposited > for AccountEvent"));
        assert!(output.contains("where __JetsourceState : :: jetsource :: __private :: Apply < Opened > , __JetsourceState : :: jetsource :: __private :: Apply < money :: Deposited > ,"));
    }

    #[test]
    fn asserts_distinct_names_pairwise_and_against_retired() {
        let output = expand(quote! {
            #[event_set(retired("legacy"))]
            enum E { A(A), B(B), C(C) }
        });
        // Three pairs and three variant-vs-retired checks.
        assert_eq!(output.matches("const _").count(), 6);
        assert!(output.contains("event set `E`: variants `A` and `C` have the same wire name"));
        assert!(output.contains("retired name \\\"legacy\\\" is the wire name of variant `B`"));
    }

    #[test]
    fn without_retired_names_nothing_is_dropped() {
        let output = expand(quote!(
            enum E {
                A(A),
            }
        ));
        assert!(!output.contains("matches"));
        assert!(!output.contains("const _"));
    }

    #[test]
    fn errors_come_with_a_stub_impl() {
        let output = expand(quote!(
            enum E {
                A,
            }
        ));
        assert!(output.contains("compile_error"));
        assert!(output
            .contains("const NAMES : & 'static [& 'static :: core :: primitive :: str] = & [] ;"));
        assert!(!output.contains("ApplyEach"));
    }
}
