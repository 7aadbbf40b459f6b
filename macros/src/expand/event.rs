//! `#[derive(Event)]`: the wire constants, the codec calls and the upcast chain.

use super::{const_assert, parse_input, run, stub_impl_header, thread_safe, type_name};
use crate::ast::EventStruct;
use crate::attr::event::CodecKind;
use crate::valid;
use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::LitStr;

pub fn derive(input: TokenStream) -> TokenStream {
    match parse_input(input) {
        Ok(input) => run(
            &input,
            EventStruct::from_syn,
            valid::check_event,
            impl_event,
            stub,
        ),
        Err(error) => error,
    }
}

fn impl_event(event: &EventStruct) -> TokenStream {
    let (Some(name), Some(version)) = (&event.attrs.name, &event.attrs.version) else {
        // `valid` requires both; this only keeps generation total.
        return stub(event);
    };
    let ident = event.ident;
    let version = version.value;
    let codec = codec_path(event.attrs.codec_kind());
    let payload_fns = payload_fns(event);
    let older = decode_older(event);
    let (is_known_older, known_names) = match &event.attrs.previous {
        Some(previous) => (
            quote! {
                || <#previous as ::jetsource::__private::Event>::is_known_name(name)
            },
            quote! {
                fn known_names() -> ::jetsource::__private::Vec<&'static ::core::primitive::str> {
                    ::jetsource::__private::distinct_names([
                        ::jetsource::__private::Vec::from([<Self as ::jetsource::__private::Event>::NAME]),
                        <#previous as ::jetsource::__private::Event>::known_names(),
                    ])
                }
            },
        ),
        // The trait's default: the one current name.
        None => (TokenStream::new(), TokenStream::new()),
    };
    let assertions = previous_assertions(event, name, version);

    // The impl sits in an anonymous const so the payload functions' constant is private to it.
    quote! {
        const _: () = {
            #payload_fns

            #[automatically_derived]
            impl ::jetsource::__private::Event for #ident {
                const NAME: &'static ::core::primitive::str = #name;
                const VERSION: ::core::primitive::u32 = #version;
                const CODEC: ::jetsource::__private::Codec = #codec;

                fn encode_payload(
                    &self,
                ) -> ::core::result::Result<
                    ::jetsource::__private::Vec<::core::primitive::u8>,
                    ::jetsource::__private::EncodeError,
                > {
                    (__JETSOURCE_PAYLOAD.encode)(self, <Self as ::jetsource::__private::Event>::NAME)
                }

                fn decode_stored(
                    raw: ::jetsource::__private::RawEvent<'_>,
                ) -> ::core::result::Result<Self, ::jetsource::__private::DecodeError> {
                    if raw.name == <Self as ::jetsource::__private::Event>::NAME {
                        if raw.version == <Self as ::jetsource::__private::Event>::VERSION {
                            return (__JETSOURCE_PAYLOAD.decode)(raw);
                        }
                        if raw.version > <Self as ::jetsource::__private::Event>::VERSION {
                            return ::core::result::Result::Err(
                                ::jetsource::__private::future_version(
                                    raw,
                                    <Self as ::jetsource::__private::Event>::VERSION,
                                ),
                            );
                        }
                    }
                    #older
                }

                fn is_known_name(name: &::core::primitive::str) -> ::core::primitive::bool {
                    name == <Self as ::jetsource::__private::Event>::NAME #is_known_older
                }

                #known_names
            }
        };

        #assertions
    }
}

fn codec_path(kind: CodecKind) -> TokenStream {
    match kind {
        CodecKind::Json => quote!(::jetsource::__private::Codec::Json),
        CodecKind::Protobuf => quote!(::jetsource::__private::Codec::Protobuf),
    }
}

/// The codec's payload functions for this type, fetched once into a constant spanned at
/// `codec = "..."` (or the type name, for the default JSON): a type that cannot serve the codec
/// fails that one bound, where the codec was chosen, with the codec trait's message.
fn payload_fns(event: &EventStruct) -> TokenStream {
    let ident = event.ident;
    let span = event
        .attrs
        .codec
        .as_ref()
        .map_or_else(|| ident.span(), |choice| choice.literal.span());
    let constructor = match event.attrs.codec_kind() {
        CodecKind::Json => quote_spanned!(span=> ::jetsource::__private::json_payload_fns),
        CodecKind::Protobuf => quote_spanned!(span=> ::jetsource::__private::protobuf_payload_fns),
    };
    // The type argument carries the span too: the compiler reports an unmet bound there.
    let mut spanned_ident = ident.clone();
    spanned_ident.set_span(span);
    quote_spanned! {span=>
        const __JETSOURCE_PAYLOAD: ::jetsource::__private::PayloadFns<#ident> =
            #constructor::<#spanned_ident>();
    }
}

/// What `decode_stored` does with anything but this type's own name and a current or future
/// version: hand it to the previous version and upcast the result, or, at the start of the
/// chain, report a version nobody knows.
fn decode_older(event: &EventStruct) -> TokenStream {
    let Some(previous) = &event.attrs.previous else {
        return quote! {
            ::core::result::Result::Err(::jetsource::__private::unknown_version(raw))
        };
    };
    // Spanned at the user's upcast path or `previous` type, where a wrong signature, a wrong
    // return type or a missing `From` impl is then reported.
    let upcast = match &event.attrs.upcast {
        // The function returns `Self` or `Result<Self, E>`; `UpcastOutput` takes either, and a
        // failure becomes `DecodeError::Upcast` naming the stored event and this version.
        Some(upcast) => quote_spanned! {upcast.span()=>
            ::jetsource::__private::upcast_with::<Self, _>(
                raw,
                <Self as ::jetsource::__private::Event>::VERSION,
                #upcast(previous),
            )
        },
        None => quote_spanned! {previous.span()=>
            ::core::result::Result::Ok(
                <Self as ::jetsource::__private::UpcastFrom<#previous>>::upcast_from(previous),
            )
        },
    };
    quote! {
        let previous = <#previous as ::jetsource::__private::Event>::decode_stored(raw)?;
        #upcast
    }
}

/// The previous version must carry the same wire name (or the `renamed_from` one) and be
/// exactly one version older; only the compiler can read its constants, so these are const
/// assertions, with messages written now, naming both types.
fn previous_assertions(event: &EventStruct, name: &LitStr, version: u32) -> TokenStream {
    let Some(previous) = &event.attrs.previous else {
        return TokenStream::new();
    };
    let this = event.ident.to_string();
    let older = type_name(previous);
    let (expected_name, name_span, name_message) = match &event.attrs.renamed_from {
        Some(renamed_from) => (
            renamed_from.value(),
            renamed_from.span(),
            format!(
                "`renamed_from = {:?}` of event `{this}` must be the wire name of its previous version `{older}`",
                renamed_from.value()
            ),
        ),
        None => (
            name.value(),
            previous.span(),
            format!(
                "the previous version `{older}` of event `{this}` must have the same wire name {:?}; if the event was renamed, add `renamed_from = \"<{older}'s name>\"`",
                name.value()
            ),
        ),
    };
    let name_check = const_assert(
        name_span,
        quote! {
            ::jetsource::__private::str_eq(
                <#previous as ::jetsource::__private::Event>::NAME,
                #expected_name,
            )
        },
        &name_message,
    );
    let expected_version = version - 1;
    let version_check = const_assert(
        previous.span(),
        quote! {
            <#previous as ::jetsource::__private::Event>::VERSION == #expected_version
        },
        &format!(
            "the previous version `{older}` of event `{this}` (version {version}) must be version {expected_version}"
        ),
    );
    quote!(#name_check #version_check)
}

/// After an error: the constants that were readable, and bodies that fail at run time (they
/// never run: the crate does not compile).
fn stub(event: &EventStruct) -> TokenStream {
    let header = stub_impl_header(
        event.original,
        quote!(::jetsource::__private::Event),
        thread_safe(),
    );
    let name = match &event.attrs.name {
        Some(name) => quote!(#name),
        None => quote!(""),
    };
    let version = event
        .attrs
        .version
        .as_ref()
        .map_or(1, |version| version.value);
    let codec = codec_path(event.attrs.codec_kind());
    quote! {
        #header {
            const NAME: &'static ::core::primitive::str = #name;
            const VERSION: ::core::primitive::u32 = #version;
            const CODEC: ::jetsource::__private::Codec = #codec;

            fn encode_payload(
                &self,
            ) -> ::core::result::Result<
                ::jetsource::__private::Vec<::core::primitive::u8>,
                ::jetsource::__private::EncodeError,
            > {
                ::core::result::Result::Err(::jetsource::__private::derive_failed(
                    <Self as ::jetsource::__private::Event>::NAME,
                ))
            }

            fn decode_stored(
                raw: ::jetsource::__private::RawEvent<'_>,
            ) -> ::core::result::Result<Self, ::jetsource::__private::DecodeError> {
                ::core::result::Result::Err(::jetsource::__private::unknown_version(raw))
            }

            fn is_known_name(_: &::core::primitive::str) -> ::core::primitive::bool {
                false
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
    fn generates_constants_and_json_codec() {
        let output = expand(quote! {
            #[event(name = "deposited", version = 1)]
            struct Deposited { amount: u64 }
        });
        assert!(output.contains("impl :: jetsource :: __private :: Event for Deposited"));
        assert!(
            output.contains("const NAME : & 'static :: core :: primitive :: str = \"deposited\"")
        );
        assert!(output.contains("const VERSION : :: core :: primitive :: u32 = 1u32"));
        assert!(output.contains(":: jetsource :: __private :: Codec :: Json"));
        assert!(output.contains(
            "const __JETSOURCE_PAYLOAD : :: jetsource :: __private :: PayloadFns < Deposited > = :: jetsource :: __private :: json_payload_fns :: < Deposited > ()"
        ));
        assert!(output.contains("unknown_version (raw)"));
        assert!(
            !output.contains("known_names"),
            "a first version keeps the trait's default"
        );
        assert!(
            !output.contains("assert"),
            "no previous, no assertions: {output}"
        );
    }

    #[test]
    fn protobuf_codec_uses_the_protobuf_helpers() {
        let output = expand(quote! {
            #[event(name = "deposited", version = 1, codec = "protobuf")]
            struct Deposited { amount: u64 }
        });
        assert!(output.contains("Codec :: Protobuf"));
        assert!(output
            .contains(":: jetsource :: __private :: protobuf_payload_fns :: < Deposited > ()"));
        assert!(!output.contains("json"));
    }

    #[test]
    fn previous_version_is_upcast_with_from_and_asserted() {
        let output = expand(quote! {
            #[event(name = "opened", version = 2, previous = v1::Opened)]
            struct Opened;
        });
        assert!(output.contains(
            "let previous = < v1 :: Opened as :: jetsource :: __private :: Event > :: decode_stored (raw) ? ;"
        ));
        assert!(output.contains(
            ":: core :: result :: Result :: Ok (< Self as :: jetsource :: __private :: UpcastFrom < v1 :: Opened >> :: upcast_from (previous) ,)"
        ));
        assert!(output.contains(
            "< v1 :: Opened as :: jetsource :: __private :: Event > :: is_known_name (name)"
        ));
        assert!(output.contains(
            "str_eq (< v1 :: Opened as :: jetsource :: __private :: Event > :: NAME , \"opened\" ,)"
        ));
        assert!(output.contains("VERSION == 1u32"));
        assert!(output.contains(
            "distinct_names ([:: jetsource :: __private :: Vec :: from ([< Self as :: jetsource :: __private :: Event > :: NAME]) , < v1 :: Opened as :: jetsource :: __private :: Event > :: known_names () ,])"
        ));
        assert!(output.contains(
            "the previous version `v1::Opened` of event `Opened` (version 2) must be version 1"
        ));
    }

    #[test]
    fn custom_upcast_and_rename() {
        let output = expand(quote! {
            #[event(name = "account_opened", version = 3, previous = Created, upcast = up::grade, renamed_from = "created")]
            struct Opened;
        });
        assert!(output.contains(
            ":: jetsource :: __private :: upcast_with :: < Self , _ > (raw , < Self as :: jetsource :: __private :: Event > :: VERSION , up :: grade (previous) ,)"
        ));
        assert!(!output.contains("UpcastFrom"));
        assert!(output.contains(":: NAME , \"created\" ,"));
        assert!(output.contains(
            "`renamed_from = \\\"created\\\"` of event `Opened` must be the wire name of its previous version `Created`"
        ));
    }

    #[test]
    fn errors_come_with_a_stub_impl() {
        let output = expand(quote! {
            #[event(version = 0, colour = "red")]
            struct Broken;
        });
        assert!(output.contains("compile_error ! { \"unknown key `colour`"));
        assert!(output.contains("compile_error ! { \"missing `name` in #[event]\" }"));
        assert!(output.contains("compile_error ! { \"event versions start at 1\" }"));
        assert!(output.contains("impl :: jetsource :: __private :: Event for Broken {"));
        assert!(output.contains("derive_failed"));
    }

    #[test]
    fn unparsable_input_is_reported() {
        assert!(expand(quote!(
            fn not_a_type() {}
        ))
        .contains("compile_error"));
    }
}
