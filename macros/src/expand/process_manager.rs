//! `#[process_manager]`: the handled event set and the `ProcessManager` impl (name, deadline
//! names, correlation, start events and the dispatch to the handlers), beside the user's impl
//! block, which is kept with the handler attributes removed.

use crate::ast::process_manager::{HandlerKind, PmHandler, ProcessManagerImpl};
use crate::attr::process_manager::{is_helper, Correlate};
use crate::ctxt::Ctxt;
use crate::valid;
use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{Ident, ImplItem, Item, ItemImpl, Member, ReturnType, Type};

pub fn attribute(args: TokenStream, item: TokenStream) -> TokenStream {
    let input = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Impl(input)) => input,
        Ok(_) => {
            let error = syn::Error::new(
                Span::call_site(),
                "#[process_manager] goes on an inherent `impl Type { ... }` block of handlers",
            );
            let mut output = error.to_compile_error();
            output.extend(item);
            return output;
        }
        // Not even an item: the compiler reports the syntax error once the item is emitted.
        Err(_) => return item,
    };
    let kept = without_helper_attributes(&input);
    let cx = Ctxt::new();
    let pm = ProcessManagerImpl::from_syn(&cx, args, &input);
    valid::check_process_manager(&cx, &pm);
    let generated = match cx.check() {
        Ok(()) => generate(&pm),
        Err(errors) => {
            let mut output = errors.to_compile_error();
            output.extend(stub(&pm));
            output
        }
    };
    quote! {
        #kept
        #generated
    }
}

/// The user's block without `#[start]`, `#[correlate]`, `#[deadline]` and `#[rejected]` on its
/// methods: they are this macro's, and no attribute of that name exists for the compiler.
fn without_helper_attributes(input: &ItemImpl) -> ItemImpl {
    let mut kept = input.clone();
    for item in &mut kept.items {
        if let ImplItem::Fn(method) = item {
            method.attrs.retain(|attr| !is_helper(attr));
        }
    }
    kept
}

/// The handlers of a block that passed `valid`, with what each handles.
struct EventRoute<'a> {
    handler: &'a PmHandler<'a>,
    event: &'a Type,
}

fn generate(pm: &ProcessManagerImpl) -> TokenStream {
    let (Some(ident), Some(name)) = (pm.ident, &pm.attrs.name) else {
        // `valid` requires both; this only keeps generation total.
        return stub(pm);
    };
    let self_ty = &pm.original.self_ty;
    let events = format_ident!("__{}Events", ident);
    let routes: Vec<EventRoute> = pm
        .handlers_of(HandlerKind::Event)
        .filter_map(|handler| {
            Some(EventRoute {
                handler,
                event: handler.input_type()?,
            })
        })
        .collect();
    let variants = routes.iter().map(|route| {
        let (variant, event) = (route.handler.ident, route.event);
        quote!(#variant(#event))
    });
    let correlate_arms = routes.iter().map(|route| {
        let variant = route.handler.ident;
        let id = correlation(pm, route.handler);
        quote!(#events::#variant(event) => #id,)
    });
    let start_arms = routes.iter().map(|route| {
        let variant = route.handler.ident;
        let starts = route.handler.attrs.start.is_some();
        quote!(#events::#variant(_) => #starts,)
    });
    let handle_arms = routes.iter().map(|route| {
        let variant = route.handler.ident;
        let call = call(route.handler, Some(quote!(event)));
        quote!(#events::#variant(event) => #call,)
    });
    let on_deadline = on_deadline(pm);
    let on_rejected = on_rejected(pm);
    let deadlines = pm
        .handlers_of(HandlerKind::Deadline)
        .filter_map(|handler| handler.attrs.deadline.as_ref()?.name.as_ref());

    // The event set is a real `EventSet` derive, so its checks (every variant an `Event`,
    // distinct wire names) apply, spanned at the handlers' parameter types. It is `pub` because
    // `ProcessManager::Event` of a public type must not be private; its variants hold the
    // user's event types, which may be less visible, hence the `private_interfaces` allowance.
    // Variants are named after the handler methods, unique within the block.
    quote! {
        #[doc(hidden)]
        #[allow(non_camel_case_types, private_interfaces)]
        #[derive(::jetsource::EventSet)]
        pub enum #events {
            #(#variants,)*
        }

        #[automatically_derived]
        impl ::jetsource::__private::ProcessManager for #self_ty {
            const NAME: &'static ::core::primitive::str = #name;
            const DEADLINES: &'static [&'static ::core::primitive::str] = &[#(#deadlines),*];
            type Event = #events;

            fn correlate(event: &#events) -> ::std::string::String {
                match event {
                    #(#correlate_arms)*
                }
            }

            fn starts(event: &#events) -> ::core::primitive::bool {
                match event {
                    #(#start_arms)*
                }
            }

            async fn handle(
                &mut self,
                event: #events,
                cx: &mut ::jetsource::__private::ProcessContext,
            ) -> ::core::result::Result<(), ::jetsource::__private::HandlerError> {
                match event {
                    #(#handle_arms)*
                }
            }

            #on_deadline
            #on_rejected
        }
    }
}

/// A span at the user's tokens for errors, resolving names like the generated code around it
/// (so `event` and `cx` still name the generated bindings).
fn at(tokens: &impl Spanned) -> Span {
    Span::call_site().located_at(tokens.span())
}

/// The instance id of `event` (a `&EventType`), by the handler's `#[correlate(...)]` or the
/// block's `correlate = field`. A field access is spanned at the field as written, so a field
/// the event does not have is reported there, as rustc's own "no field" error.
fn correlation(pm: &ProcessManagerImpl, handler: &PmHandler) -> TokenStream {
    let how = handler
        .attrs
        .correlate
        .as_ref()
        .and_then(|correlate| correlate.how.as_ref());
    match (how, &pm.attrs.correlate) {
        (Some(Correlate::Field(field)), _) | (None, Some(field)) => field_id(field),
        (Some(Correlate::With(path)), _) => {
            let event = Ident::new("event", at(path));
            quote_spanned! {at(path)=>
                ::std::string::ToString::to_string(&#path(#event))
            }
        }
        // `valid` requires one of them; this only keeps generation total.
        (None, None) => quote!(::core::unreachable!()),
    }
}

fn field_id(field: &Member) -> TokenStream {
    let event = Ident::new("event", at(field));
    quote_spanned! {at(field)=>
        ::std::string::ToString::to_string(&(*#event).#field)
    }
}

/// `Self::handler(self, <input>, cx).await`, spanned at the handler's return type (or name),
/// where a handler that does not return `Result<(), HandlerError>` is then reported. The
/// context argument is spanned at the handler's context type, where a wrong one is reported.
fn call(handler: &PmHandler, input: Option<TokenStream>) -> TokenStream {
    let method = handler.ident;
    let span = match &handler.original.sig.output {
        ReturnType::Type(_, ty) => at(ty),
        ReturnType::Default => at(method),
    };
    // At `ProcessContext` in `&mut ProcessContext`: the type a mistake is in.
    let context = match handler.context_type() {
        Some(Type::Reference(reference)) => Ident::new("cx", at(&reference.elem)),
        Some(ty) => Ident::new("cx", at(ty)),
        None => Ident::new("cx", Span::call_site()),
    };
    let args = input.into_iter().chain([context.into_token_stream()]);
    quote_spanned!(span=> Self::#method(self, #(#args),*).await)
}

/// The dispatch by deadline name; a name no handler takes is a permanent failure (the runtime
/// only delivers names of `DEADLINES`).
fn on_deadline(pm: &ProcessManagerImpl) -> TokenStream {
    let arms: Vec<TokenStream> = pm
        .handlers_of(HandlerKind::Deadline)
        .filter_map(|handler| {
            let name = handler.attrs.deadline.as_ref()?.name.as_ref()?;
            let call = call(handler, None);
            Some(quote!(#name => #call,))
        })
        .collect();
    let cx = context_param(!arms.is_empty());
    quote! {
        async fn on_deadline(
            &mut self,
            deadline: &::core::primitive::str,
            #cx: &mut ::jetsource::__private::ProcessContext,
        ) -> ::core::result::Result<(), ::jetsource::__private::HandlerError> {
            match deadline {
                #(#arms)*
                _ => ::core::result::Result::Err(::jetsource::__private::HandlerError::permanent(
                    ::std::format!(
                        "process manager {:?} has no #[deadline({:?})] handler",
                        <Self as ::jetsource::__private::ProcessManager>::NAME,
                        deadline,
                    ),
                )),
            }
        }
    }
}

/// Each `#[rejected]` handler in order takes the rejections of its command type; the others are
/// logged and the instance goes on.
fn on_rejected(pm: &ProcessManagerImpl) -> TokenStream {
    let tries: Vec<TokenStream> = pm
        .handlers_of(HandlerKind::Rejected)
        .filter_map(|handler| {
            let ty = handler.input_type()?;
            let typed = quote_spanned!(at(ty)=> <#ty>::from_rejection(&rejection));
            let call = call(handler, Some(quote!(rejected)));
            Some(quote! {
                if let ::core::option::Option::Some(rejected) = #typed {
                    return #call;
                }
            })
        })
        .collect();
    let cx = context_param(!tries.is_empty());
    quote! {
        async fn on_rejected(
            &mut self,
            rejection: ::jetsource::__private::Rejection,
            #cx: &mut ::jetsource::__private::ProcessContext,
        ) -> ::core::result::Result<(), ::jetsource::__private::HandlerError> {
            #(#tries)*
            ::jetsource::__private::unhandled_rejection(
                <Self as ::jetsource::__private::ProcessManager>::NAME,
                &rejection,
            );
            ::core::result::Result::Ok(())
        }
    }
}

/// `cx` when a handler gets it, else `_` (no unused-variable warning in the user's crate).
fn context_param(used: bool) -> TokenStream {
    if used {
        quote!(cx)
    } else {
        quote!(_)
    }
}

/// After an error: an impl that handles no events (the crate does not compile, so it never
/// runs), so uses of the type do not add "trait not implemented" errors. Skipped where such an
/// impl would be an error of its own (a trait impl, generics, an unnamed type).
fn stub(pm: &ProcessManagerImpl) -> TokenStream {
    let item: &ItemImpl = pm.original;
    if item.trait_.is_some() || !item.generics.params.is_empty() || pm.ident.is_none() {
        return TokenStream::new();
    }
    let self_ty = &item.self_ty;
    let name = match &pm.attrs.name {
        Some(name) => name.to_token_stream(),
        None => quote!(""),
    };
    quote! {
        #[automatically_derived]
        impl ::jetsource::__private::ProcessManager for #self_ty {
            const NAME: &'static ::core::primitive::str = #name;
            const DEADLINES: &'static [&'static ::core::primitive::str] = &[];
            type Event = ::jetsource::__private::NoEvents;

            fn correlate(event: &::jetsource::__private::NoEvents) -> ::std::string::String {
                match *event {}
            }

            fn starts(event: &::jetsource::__private::NoEvents) -> ::core::primitive::bool {
                match *event {}
            }

            async fn handle(
                &mut self,
                event: ::jetsource::__private::NoEvents,
                _: &mut ::jetsource::__private::ProcessContext,
            ) -> ::core::result::Result<(), ::jetsource::__private::HandlerError> {
                match event {}
            }

            async fn on_deadline(
                &mut self,
                _: &::core::primitive::str,
                _: &mut ::jetsource::__private::ProcessContext,
            ) -> ::core::result::Result<(), ::jetsource::__private::HandlerError> {
                ::core::result::Result::Ok(())
            }

            async fn on_rejected(
                &mut self,
                _: ::jetsource::__private::Rejection,
                _: &mut ::jetsource::__private::ProcessContext,
            ) -> ::core::result::Result<(), ::jetsource::__private::HandlerError> {
                ::core::result::Result::Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(args: TokenStream, item: TokenStream) -> String {
        attribute(args, item).to_string()
    }

    #[test]
    fn generates_event_set_and_process_manager() {
        let output = expand(
            quote!(name = "fulfilment", correlate = order_id),
            quote! {
                impl Fulfilment {
                    #[start]
                    async fn on_placed(&mut self, e: v2::Placed, cx: &mut ProcessContext) -> Result<(), HandlerError> {
                        cx.schedule("payment", d);
                        Ok(())
                    }
                    #[correlate(with = ids::of)]
                    async fn on_paid(&mut self, e: Paid, cx: &mut ProcessContext) -> Result<(), HandlerError> { Ok(()) }
                    #[correlate(order)]
                    async fn on_shipped(&mut self, e: Shipped, cx: &mut ProcessContext) -> Result<(), HandlerError> { Ok(()) }
                    #[deadline("payment")]
                    async fn overdue(&mut self, cx: &mut ProcessContext) -> Result<(), HandlerError> { Ok(()) }
                    #[rejected]
                    async fn refused(&mut self, r: Rejected<Reserve>, cx: &mut ProcessContext) -> Result<(), HandlerError> { Ok(()) }
                }
            },
        );
        assert!(
            output.starts_with("impl Fulfilment { async fn on_placed"),
            "helper attributes removed: {output}"
        );
        for expected in [
            "pub enum __FulfilmentEvents { on_placed (v2 :: Placed) , on_paid (Paid) , on_shipped (Shipped) , }",
            "impl :: jetsource :: __private :: ProcessManager for Fulfilment { const NAME : & 'static :: core :: primitive :: str = \"fulfilment\" ; const DEADLINES : & 'static [& 'static :: core :: primitive :: str] = & [\"payment\"] ; type Event = __FulfilmentEvents ;",
            "__FulfilmentEvents :: on_placed (event) => :: std :: string :: ToString :: to_string (& (* event) . order_id) ,",
            "__FulfilmentEvents :: on_paid (event) => :: std :: string :: ToString :: to_string (& ids :: of (event)) ,",
            "__FulfilmentEvents :: on_shipped (event) => :: std :: string :: ToString :: to_string (& (* event) . order) ,",
            "__FulfilmentEvents :: on_placed (_) => true , __FulfilmentEvents :: on_paid (_) => false ,",
            "__FulfilmentEvents :: on_paid (event) => Self :: on_paid (self , event , cx) . await ,",
            "\"payment\" => Self :: overdue (self , cx) . await ,",
            "if let :: core :: option :: Option :: Some (rejected) = < Rejected < Reserve > > :: from_rejection (& rejection) { return Self :: refused (self , rejected , cx) . await ; }",
            ":: jetsource :: __private :: unhandled_rejection (< Self as :: jetsource :: __private :: ProcessManager > :: NAME , & rejection ,) ;",
        ] {
            assert!(output.contains(expected), "{expected}\nin\n{output}");
        }
    }

    #[test]
    fn unused_contexts_are_unnamed() {
        let output = expand(
            quote!(name = "f", correlate = id),
            quote!(impl F { #[start] async fn a(&mut self, e: A, cx: &mut C) -> R { Ok(()) } }),
        );
        assert!(output.contains(
            "const DEADLINES : & 'static [& 'static :: core :: primitive :: str] = & [] ;"
        ));
        assert!(output.contains("deadline : & :: core :: primitive :: str , _ : & mut"));
        assert!(output.contains("rejection : :: jetsource :: __private :: Rejection , _ : & mut"));
    }

    #[test]
    fn errors_come_with_the_block_and_a_stub_impl() {
        let output = expand(
            quote!(correlate = id),
            quote!(impl F { #[deadline("d")] fn d(&mut self, cx: &mut C) -> R { Ok(()) } }),
        );
        assert!(output.starts_with("impl F { fn d"), "{output}");
        for message in [
            "missing `name` in #[process_manager]",
            "handler `d` must be an `async fn`",
            "needs a `#[start]` event handler",
            "deadline \\\"d\\\" is never scheduled",
        ] {
            assert!(output.contains(message), "{message} in {output}");
        }
        assert!(output.contains("type Event = :: jetsource :: __private :: NoEvents"));
        assert!(output.contains("const NAME : & 'static :: core :: primitive :: str = \"\""));
        assert!(!output.contains("EventSet"), "no event set after errors");
    }

    #[test]
    fn only_impl_blocks_are_accepted() {
        let output = expand(
            quote!(name = "f", correlate = id),
            quote!(
                struct S;
            ),
        );
        assert!(output.contains("goes on an inherent `impl Type { ... }` block"));
        assert!(output.ends_with("struct S ;"));
        let trait_impl = expand(
            quote!(name = "f", correlate = id),
            quote!(impl ProcessManager for S { #[start] async fn a(&mut self, e: A, cx: &mut C) -> R { Ok(()) } }),
        );
        assert!(trait_impl.contains("not on a trait impl"));
        assert!(!trait_impl.contains("NoEvents"), "no stub for a trait impl");
        assert!(!trait_impl.contains("# [start]"), "helpers removed");
    }
}
