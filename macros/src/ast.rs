//! The derive inputs as this crate sees them: borrowed from the `DeriveInput` (so every error
//! can point at the user's own tokens) with the attributes already parsed.

pub mod process_manager;

use crate::attr::aggregate::{self, AggregateAttrs};
use crate::attr::event::{self, EventAttrs};
use crate::attr::event_set::{self, EventSetAttrs};
use crate::attr::subscriber::{self, SubscriberAttrs};
use crate::ctxt::Ctxt;
use proc_macro2::TokenStream;
use syn::{Data, DeriveInput, Fields, FnArg, Ident, ImplItem, ImplItemFn, ItemImpl, Type};

/// The input of `#[derive(Event)]`.
pub struct EventStruct<'a> {
    pub original: &'a DeriveInput,
    pub ident: &'a Ident,
    pub attrs: EventAttrs<'a>,
}

impl<'a> EventStruct<'a> {
    pub fn from_syn(cx: &Ctxt, input: &'a DeriveInput) -> Self {
        EventStruct {
            original: input,
            ident: &input.ident,
            attrs: event::parse(cx, &input.attrs),
        }
    }
}

/// The input of `#[derive(EventSet)]`.
pub struct EventSetEnum<'a> {
    pub original: &'a DeriveInput,
    pub ident: &'a Ident,
    pub attrs: EventSetAttrs,
    /// Empty when the input is not an enum; `valid` reports that.
    pub variants: Vec<EventVariant<'a>>,
}

/// One variant of an event set.
pub struct EventVariant<'a> {
    pub original: &'a syn::Variant,
    pub ident: &'a Ident,
    /// The wrapped event type: `Some` only for a tuple variant with exactly one field.
    pub event_type: Option<&'a Type>,
}

impl<'a> EventSetEnum<'a> {
    pub fn from_syn(cx: &Ctxt, input: &'a DeriveInput) -> Self {
        let variants = match &input.data {
            Data::Enum(data) => data.variants.iter().map(EventVariant::from_syn).collect(),
            Data::Struct(_) | Data::Union(_) => Vec::new(),
        };
        EventSetEnum {
            original: input,
            ident: &input.ident,
            attrs: event_set::parse(cx, &input.attrs),
            variants,
        }
    }
}

impl<'a> EventVariant<'a> {
    fn from_syn(variant: &'a syn::Variant) -> Self {
        let event_type = match &variant.fields {
            Fields::Unnamed(fields) if fields.unnamed.len() == 1 => {
                fields.unnamed.first().map(|field| &field.ty)
            }
            Fields::Unnamed(_) | Fields::Named(_) | Fields::Unit => None,
        };
        EventVariant {
            original: variant,
            ident: &variant.ident,
            event_type,
        }
    }
}

/// The input of `#[derive(Aggregate)]`.
pub struct AggregateState<'a> {
    pub original: &'a DeriveInput,
    pub ident: &'a Ident,
    pub attrs: AggregateAttrs<'a>,
}

impl<'a> AggregateState<'a> {
    pub fn from_syn(cx: &Ctxt, input: &'a DeriveInput) -> Self {
        AggregateState {
            original: input,
            ident: &input.ident,
            attrs: aggregate::parse(cx, &input.attrs),
        }
    }
}

/// The input of `#[subscriber]`: an `impl` block whose methods are all event handlers.
pub struct SubscriberImpl<'a> {
    pub original: &'a ItemImpl,
    pub attrs: SubscriberAttrs,
    /// The implementing type's name (the last path segment); `None` for a type that is not a
    /// plain path, which `valid` reports.
    pub ident: Option<&'a Ident>,
    /// Every method of the block, in order.
    pub handlers: Vec<Handler<'a>>,
}

/// One method of a subscriber block, read as a handler.
pub struct Handler<'a> {
    pub original: &'a ImplItemFn,
    pub ident: &'a Ident,
    /// The type of the first parameter after the receiver: the handled event.
    pub event_type: Option<&'a Type>,
}

impl<'a> SubscriberImpl<'a> {
    pub fn from_syn(cx: &Ctxt, args: TokenStream, input: &'a ItemImpl) -> Self {
        let ident = self_ident(input);
        let handlers = input
            .items
            .iter()
            .filter_map(|item| match item {
                ImplItem::Fn(method) => Some(Handler::from_syn(method)),
                _ => None,
            })
            .collect();
        SubscriberImpl {
            original: input,
            attrs: subscriber::parse(cx, args),
            ident,
            handlers,
        }
    }
}

impl<'a> Handler<'a> {
    fn from_syn(method: &'a ImplItemFn) -> Self {
        let event_type = method.sig.inputs.iter().find_map(|input| match input {
            FnArg::Typed(typed) => Some(&*typed.ty),
            FnArg::Receiver(_) => None,
        });
        Handler {
            original: method,
            ident: &method.sig.ident,
            event_type,
        }
    }
}

/// The name of the type an `impl` block is for, when it is a plain path.
fn self_ident(input: &ItemImpl) -> Option<&Ident> {
    match &*input.self_ty {
        Type::Path(path) if path.qself.is_none() => {
            path.path.segments.last().map(|segment| &segment.ident)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::ToTokens;
    use syn::parse_quote;

    #[test]
    fn event_set_keeps_single_field_tuple_variants_only() {
        let input: DeriveInput = parse_quote! {
            enum AccountEvent { Opened(Opened), Pair(A, B), Named { e: E }, Unit }
        };
        let cx = Ctxt::new();
        let set = EventSetEnum::from_syn(&cx, &input);
        cx.check().unwrap();
        let types: Vec<Option<String>> = set
            .variants
            .iter()
            .map(|v| v.event_type.map(|t| t.to_token_stream().to_string()))
            .collect();
        assert_eq!(types, [Some("Opened".to_owned()), None, None, None]);
    }

    #[test]
    fn subscriber_handlers_are_the_methods_with_their_event_types() {
        let input: ItemImpl = parse_quote! {
            impl crate::Balances {
                const LIMIT: u64 = 3;
                async fn on_opened(&self, e: v2::Opened, ctx: &EventContext) -> R { Ok(()) }
                fn no_args() {}
            }
        };
        let cx = Ctxt::new();
        let sub = SubscriberImpl::from_syn(&cx, quote::quote!(durable = "b"), &input);
        cx.check().unwrap();
        assert_eq!(sub.ident.unwrap(), "Balances");
        let handlers: Vec<(String, Option<String>)> = sub
            .handlers
            .iter()
            .map(|h| {
                let ty = h.event_type.map(|t| t.to_token_stream().to_string());
                (h.ident.to_string(), ty)
            })
            .collect();
        assert_eq!(
            handlers,
            [
                ("on_opened".to_owned(), Some("v2 :: Opened".to_owned())),
                ("no_args".to_owned(), None)
            ]
        );
    }

    #[test]
    fn event_set_of_a_struct_has_no_variants() {
        let input: DeriveInput = parse_quote!(
            struct NotAnEnum(Opened);
        );
        let cx = Ctxt::new();
        assert!(EventSetEnum::from_syn(&cx, &input).variants.is_empty());
        cx.check().unwrap();
    }
}
