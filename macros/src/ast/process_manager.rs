//! The input of `#[process_manager]`: an `impl` block whose methods are all handlers, each
//! with its helper attributes parsed and its kind decided by them.

use crate::attr::process_manager::{self, HandlerAttrs, ProcessManagerAttrs};
use crate::ctxt::Ctxt;
use proc_macro2::TokenStream;
use syn::{FnArg, Ident, ImplItem, ImplItemFn, ItemImpl, PatType, Type};

/// The input of `#[process_manager]`.
pub struct ProcessManagerImpl<'a> {
    pub original: &'a ItemImpl,
    pub attrs: ProcessManagerAttrs,
    /// The implementing type's name (the last path segment); `None` for a type that is not a
    /// plain path, which `valid` reports.
    pub ident: Option<&'a Ident>,
    /// Every method of the block, in order.
    pub handlers: Vec<PmHandler<'a>>,
}

/// What a handler handles, as its attributes say.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum HandlerKind {
    /// No `#[deadline]` or `#[rejected]`: an event of the handler's first parameter type.
    Event,
    /// `#[deadline("name")]`.
    Deadline,
    /// `#[rejected]`: a `Rejected<C>` of the handler's first parameter type.
    Rejected,
}

/// One method of a process manager block, read as a handler.
pub struct PmHandler<'a> {
    pub original: &'a ImplItemFn,
    pub ident: &'a Ident,
    pub attrs: HandlerAttrs<'a>,
    /// The parameters after the receiver, in order.
    pub params: Vec<&'a PatType>,
}

impl<'a> ProcessManagerImpl<'a> {
    pub fn from_syn(cx: &Ctxt, args: TokenStream, input: &'a ItemImpl) -> Self {
        let attrs = process_manager::parse(cx, args);
        let ident = super::self_ident(input);
        let handlers = input
            .items
            .iter()
            .filter_map(|item| match item {
                ImplItem::Fn(method) => Some(PmHandler::from_syn(cx, method)),
                _ => None,
            })
            .collect();
        ProcessManagerImpl {
            original: input,
            attrs,
            ident,
            handlers,
        }
    }

    /// The handlers of one kind, in order.
    pub fn handlers_of(&self, kind: HandlerKind) -> impl Iterator<Item = &PmHandler<'a>> {
        self.handlers
            .iter()
            .filter(move |handler| handler.kind() == kind)
    }
}

impl<'a> PmHandler<'a> {
    fn from_syn(cx: &Ctxt, method: &'a ImplItemFn) -> Self {
        let params = method
            .sig
            .inputs
            .iter()
            .filter_map(|input| match input {
                FnArg::Typed(typed) => Some(typed),
                FnArg::Receiver(_) => None,
            })
            .collect();
        PmHandler {
            original: method,
            ident: &method.sig.ident,
            attrs: process_manager::parse_handler(cx, &method.sig.ident, &method.attrs),
            params,
        }
    }

    /// `#[deadline]` wins over `#[rejected]` (having both is reported by `valid`).
    pub fn kind(&self) -> HandlerKind {
        if self.attrs.deadline.is_some() {
            HandlerKind::Deadline
        } else if self.attrs.rejected.is_some() {
            HandlerKind::Rejected
        } else {
            HandlerKind::Event
        }
    }

    /// The type of what the handler handles: the event or the `Rejected<C>`, its first
    /// parameter. `None` for a deadline handler, which handles a name, and for a handler with
    /// fewer than two parameters, whose only one may as well be the context (`valid` reports
    /// it either way).
    pub fn input_type(&self) -> Option<&'a Type> {
        match (self.kind(), &self.params[..]) {
            (HandlerKind::Event | HandlerKind::Rejected, [input, _, ..]) => Some(&*input.ty),
            _ => None,
        }
    }

    /// The type of the `&mut ProcessContext` parameter, the last the handler takes.
    pub fn context_type(&self) -> Option<&'a Type> {
        let index = match self.kind() {
            HandlerKind::Event | HandlerKind::Rejected => 1,
            HandlerKind::Deadline => 0,
        };
        self.params.get(index).map(|param| &*param.ty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::{quote, ToTokens};
    use syn::parse_quote;

    #[test]
    fn handlers_have_kinds_and_types() {
        let input: ItemImpl = parse_quote! {
            impl crate::Fulfilment {
                const LIMIT: u64 = 3;
                #[start]
                async fn on_placed(&mut self, e: v2::Placed, cx: &mut ProcessContext) -> R { Ok(()) }
                #[deadline("payment")]
                async fn overdue(&mut self, cx: &mut Cx) -> R { Ok(()) }
                #[rejected]
                async fn refused(&mut self, r: Rejected<Reserve>, cx: &mut Cx) -> R { Ok(()) }
            }
        };
        let cx = Ctxt::new();
        let pm = ProcessManagerImpl::from_syn(&cx, quote!(name = "f", correlate = id), &input);
        cx.check().unwrap();
        assert_eq!(pm.ident.unwrap(), "Fulfilment");
        let read: Vec<(String, HandlerKind, Option<String>, Option<String>)> = pm
            .handlers
            .iter()
            .map(|h| {
                let text = |ty: Option<&Type>| ty.map(|t| t.to_token_stream().to_string());
                (
                    h.ident.to_string(),
                    h.kind(),
                    text(h.input_type()),
                    text(h.context_type()),
                )
            })
            .collect();
        let owned = |s: &str| Some(s.to_owned());
        assert_eq!(
            read,
            [
                (
                    "on_placed".to_owned(),
                    HandlerKind::Event,
                    owned("v2 :: Placed"),
                    owned("& mut ProcessContext")
                ),
                (
                    "overdue".to_owned(),
                    HandlerKind::Deadline,
                    None,
                    owned("& mut Cx")
                ),
                (
                    "refused".to_owned(),
                    HandlerKind::Rejected,
                    owned("Rejected < Reserve >"),
                    owned("& mut Cx")
                ),
            ]
        );
        assert_eq!(pm.handlers_of(HandlerKind::Event).count(), 1);
    }
}
