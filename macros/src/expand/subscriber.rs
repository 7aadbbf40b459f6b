//! `#[subscriber]`: the handled event set, the `Subscriber` dispatch and the
//! `SubscriberDefinition` configuration, beside the user's impl block (which is kept as is).

use crate::ast::{Handler, SubscriberImpl};
use crate::attr::subscriber::{DeliverFrom, SubscriberAttrs};
use crate::ctxt::Ctxt;
use crate::valid;
use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{Ident, Item, ItemImpl, ReturnType};

pub fn attribute(args: TokenStream, item: TokenStream) -> TokenStream {
    let input = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Impl(input)) => input,
        Ok(_) => {
            let error = syn::Error::new(
                Span::call_site(),
                "#[subscriber] goes on an inherent `impl Type { ... }` block of event handlers",
            );
            return with_errors(error, item);
        }
        // Not even an item: the compiler reports the syntax error once the item is emitted.
        Err(_) => return item,
    };
    let cx = Ctxt::new();
    let sub = SubscriberImpl::from_syn(&cx, args, &input);
    valid::check_subscriber(&cx, &sub);
    let generated = match cx.check() {
        Ok(()) => generate(&sub),
        Err(errors) => {
            let mut output = errors.to_compile_error();
            output.extend(stub(&sub));
            output
        }
    };
    quote! {
        #input
        #generated
    }
}

/// The errors, then the item unchanged, so its own uses still resolve.
fn with_errors(error: syn::Error, item: TokenStream) -> TokenStream {
    let mut output = error.to_compile_error();
    output.extend(item);
    output
}

/// The handlers of a block that passed `valid`: each has an event type.
struct Route<'a> {
    handler: &'a Handler<'a>,
    event: &'a syn::Type,
}

fn generate(sub: &SubscriberImpl) -> TokenStream {
    let (Some(ident), Some(durable)) = (sub.ident, &sub.attrs.durable) else {
        // `valid` requires both; this only keeps generation total.
        return stub(sub);
    };
    let self_ty = &sub.original.self_ty;
    let events = events_ident(ident);
    let routes: Vec<Route> = sub
        .handlers
        .iter()
        .filter_map(|handler| {
            Some(Route {
                handler,
                event: handler.event_type?,
            })
        })
        .collect();
    let variants = routes.iter().map(|route| {
        let (variant, event) = (route.handler.ident, route.event);
        quote!(#variant(#event))
    });
    let arms = routes
        .iter()
        .map(|route| dispatch_arm(&events, route.handler));
    let settings = config_settings(&sub.attrs);

    // The event set is a real `EventSet` derive, so its checks (every variant an `Event`,
    // distinct wire names) apply, spanned at the handlers' parameter types. It is `pub`
    // because `Subscriber::Event` of a public type must not be private; its variants hold the
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
        impl ::jetsource::__private::Subscriber for #self_ty {
            type Event = #events;

            async fn handle(
                &self,
                event: #events,
                ctx: &::jetsource::__private::EventContext,
            ) -> ::core::result::Result<(), ::jetsource::__private::HandlerError> {
                match event {
                    #(#arms)*
                }
            }
        }

        #[automatically_derived]
        impl ::jetsource::__private::SubscriberDefinition for #self_ty {
            fn subscriber_config() -> ::jetsource::__private::SubscriberConfig {
                ::jetsource::__private::SubscriberConfig::new(#durable) #settings
            }
        }
    }
}

fn events_ident(ident: &Ident) -> Ident {
    format_ident!("__{}Events", ident)
}

/// One `match` arm; the call is spanned at the handler's return type (or name), where a
/// handler that does not return `Result<(), HandlerError>` is then reported.
fn dispatch_arm(events: &Ident, handler: &Handler) -> TokenStream {
    let method = handler.ident;
    let span = match &handler.original.sig.output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => method.span(),
    };
    let call = quote_spanned!(span=> Self::#method(self, event, ctx).await);
    quote! {
        #events::#method(event) => #call,
    }
}

/// The builder calls for the keys that were written; the others keep `SubscriberConfig::new`'s
/// defaults.
fn config_settings(attrs: &SubscriberAttrs) -> TokenStream {
    let mut settings = TokenStream::new();
    if let Some(stream) = &attrs.stream {
        settings.extend(quote!(.stream(#stream)));
    }
    if let Some(from) = &attrs.deliver_from {
        let from = match from {
            DeliverFrom::All => quote!(::jetsource::__private::DeliverFrom::All),
            DeliverFrom::New => quote!(::jetsource::__private::DeliverFrom::New),
            DeliverFrom::Position(position) => {
                let position = position.value;
                quote!(::jetsource::__private::DeliverFrom::Position(#position))
            }
            DeliverFrom::Time(seconds, nanos) => quote! {
                ::jetsource::__private::DeliverFrom::Time(
                    ::std::time::SystemTime::UNIX_EPOCH
                        + ::core::time::Duration::new(#seconds, #nanos)
                )
            },
        };
        settings.extend(quote!(.deliver_from(#from)));
    }
    if let Some(ack_wait) = &attrs.ack_wait_ms {
        let millis = ack_wait.value;
        settings.extend(quote!(.ack_wait(::core::time::Duration::from_millis(#millis))));
    }
    if let Some(max_deliver) = &attrs.max_deliver {
        let attempts = max_deliver.value;
        settings.extend(quote!(.max_deliver(#attempts)));
    }
    if let Some(backoff) = &attrs.backoff_ms {
        let delays = backoff.delays.iter().map(|delay| delay.value);
        settings.extend(quote! {
            .backoff([#(::core::time::Duration::from_millis(#delays)),*])
        });
    }
    if let Some(pending) = &attrs.max_ack_pending {
        let pending = pending.value;
        settings.extend(quote!(.max_ack_pending(#pending)));
    }
    if let Some(concurrency) = &attrs.concurrency {
        let concurrency = concurrency.value;
        settings.extend(quote!(.concurrency(#concurrency)));
    }
    if let Some(partitions) = &attrs.partitions {
        let partitions = partitions.value;
        settings.extend(quote!(.partitions(#partitions)));
    }
    if let Some(ttl) = &attrs.member_ttl_ms {
        let millis = ttl.value;
        settings.extend(quote!(.member_ttl(::core::time::Duration::from_millis(#millis))));
    }
    settings
}

/// After an error: impls with no events and a config that is never used (the crate does not
/// compile), so uses of the type do not add "trait not implemented" errors. Skipped where such
/// an impl would be an error of its own (a trait impl, generics, an unnamed type).
fn stub(sub: &SubscriberImpl) -> TokenStream {
    let item: &ItemImpl = sub.original;
    if item.trait_.is_some() || !item.generics.params.is_empty() || sub.ident.is_none() {
        return TokenStream::new();
    }
    let self_ty = &item.self_ty;
    let durable = match &sub.attrs.durable {
        Some(durable) => durable.to_token_stream(),
        None => quote!(""),
    };
    quote! {
        #[automatically_derived]
        impl ::jetsource::__private::Subscriber for #self_ty {
            type Event = ::jetsource::__private::NoEvents;

            async fn handle(
                &self,
                event: ::jetsource::__private::NoEvents,
                _: &::jetsource::__private::EventContext,
            ) -> ::core::result::Result<(), ::jetsource::__private::HandlerError> {
                match event {}
            }
        }

        #[automatically_derived]
        impl ::jetsource::__private::SubscriberDefinition for #self_ty {
            fn subscriber_config() -> ::jetsource::__private::SubscriberConfig {
                ::jetsource::__private::SubscriberConfig::new(#durable)
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
    fn generates_event_set_dispatch_and_config() {
        let output = expand(
            quote!(
                durable = "balances",
                deliver_from = "new",
                ack_wait_ms = 2000,
                max_deliver = 3,
                backoff_ms = [100, 1000],
                max_ack_pending = 64,
                concurrency = 8
            ),
            quote! {
                impl Balances {
                    async fn on_opened(&self, e: v2::Opened, ctx: &EventContext) -> Result<(), HandlerError> { Ok(()) }
                    async fn on_deposited(&self, e: Deposited, ctx: &EventContext) -> Result<(), HandlerError> { Ok(()) }
                }
            },
        );
        assert!(
            output.starts_with("impl Balances {"),
            "block kept: {output}"
        );
        assert!(output.contains(
            "# [derive (:: jetsource :: EventSet)] pub enum __BalancesEvents { on_opened (v2 :: Opened) , on_deposited (Deposited) , }"
        ));
        assert!(output.contains("impl :: jetsource :: __private :: Subscriber for Balances { type Event = __BalancesEvents ;"));
        assert!(output.contains(
            "__BalancesEvents :: on_opened (event) => Self :: on_opened (self , event , ctx) . await ,"
        ));
        assert!(output.contains(
            ":: jetsource :: __private :: SubscriberConfig :: new (\"balances\") . deliver_from (:: jetsource :: __private :: DeliverFrom :: New) . ack_wait (:: core :: time :: Duration :: from_millis (2000u64)) . max_deliver (3u32) . backoff ([:: core :: time :: Duration :: from_millis (100u64) , :: core :: time :: Duration :: from_millis (1000u64)]) . max_ack_pending (64usize) . concurrency (8usize)"
        ));
    }

    #[test]
    fn unset_keys_keep_the_defaults() {
        let output = expand(
            quote!(durable = "d", deliver_from = 7),
            quote!(impl S { async fn on(&self, e: E, c: &C) -> R { Ok(()) } }),
        );
        assert!(output.contains(
            "SubscriberConfig :: new (\"d\") . deliver_from (:: jetsource :: __private :: DeliverFrom :: Position (7u64)) }"
        ));
    }

    #[test]
    fn errors_come_with_the_block_and_stub_impls() {
        let output = expand(
            quote!(concurrency = 0),
            quote!(impl S { fn on(&self, e: E) {} }),
        );
        assert!(output.starts_with("impl S {"));
        for message in [
            "handler `on` must be an `async fn`",
            "handler `on` is missing the event context",
            "missing `durable` in #[subscriber]",
            "`concurrency` must be at least 1",
        ] {
            assert!(output.contains(message), "{message} in {output}");
        }
        assert!(output.contains("type Event = :: jetsource :: __private :: NoEvents"));
        assert!(output.contains("SubscriberConfig :: new (\"\")"));
        assert!(!output.contains("EventSet"), "no event set after errors");
    }

    #[test]
    fn only_impl_blocks_are_accepted() {
        let output = expand(
            quote!(durable = "d"),
            quote!(
                struct S;
            ),
        );
        assert!(output.contains("goes on an inherent `impl Type { ... }` block"));
        assert!(output.ends_with("struct S ;"));
        let trait_impl = expand(
            quote!(durable = "d"),
            quote!(impl Subscriber for S { async fn on(&self, e: E, c: &C) -> R { Ok(()) } }),
        );
        assert!(trait_impl.contains("not on a trait impl"));
        assert!(!trait_impl.contains("NoEvents"), "no stub for a trait impl");
    }
}
