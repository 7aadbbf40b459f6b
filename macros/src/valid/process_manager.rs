//! The rules of a `#[process_manager]` block: the block itself, each handler's shape and
//! attributes, and the rules across handlers (one handler per event type, a `#[start]`
//! handler, correlation for every event, deadlines that are scheduled and handled).

use super::{
    handler_is_async, handler_is_not_generic, impl_block_is_inherent_and_concrete, is_subject_token,
};
use crate::ast::process_manager::{HandlerKind, PmHandler, ProcessManagerImpl};
use crate::ctxt::Ctxt;
use crate::expand::type_name;
use proc_macro2::{Delimiter, Span, TokenStream, TokenTree};
use quote::{quote, ToTokens};
use std::collections::{HashMap, HashSet};
use syn::{FnArg, GenericArgument, LitStr, PathArguments, Type};

const EVENT_SHAPE: &str =
    "async fn name(&mut self, event: EventType, cx: &mut ProcessContext) -> Result<(), HandlerError>";
const DEADLINE_SHAPE: &str = "#[deadline(\"name\")] async fn name(&mut self, cx: &mut ProcessContext) -> Result<(), HandlerError>";
const REJECTED_SHAPE: &str = "#[rejected] async fn name(&mut self, rejected: Rejected<CommandType>, cx: &mut ProcessContext) -> Result<(), HandlerError>";

pub fn check_process_manager(cx: &Ctxt, pm: &ProcessManagerImpl) {
    check_block(cx, pm);
    if let Some(name) = &pm.attrs.name {
        is_subject_token(cx, name, "process manager name");
    }
    for handler in &pm.handlers {
        check_attributes(cx, handler);
        handler_is_async(cx, &handler.original.sig, "process_manager", shape(handler));
        handler_is_not_generic(cx, &handler.original.sig);
        handler_takes_mut_self(cx, handler);
        handler_takes_its_parameters(cx, handler);
        if let Some(deadline) = handler
            .attrs
            .deadline
            .as_ref()
            .and_then(|d| d.name.as_ref())
        {
            is_subject_token(cx, deadline, "deadline name");
        }
    }
    has_a_start_handler(cx, pm);
    one_handler_per_event_type(cx, pm);
    one_handler_per_rejected_command(cx, pm);
    every_event_is_correlated(cx, pm);
    deadlines_are_scheduled_and_handled(cx, pm);
}

fn check_block(cx: &Ctxt, pm: &ProcessManagerImpl) {
    // The name, the handled events and the stored state are fixed per type; a generic process
    // manager would store different state shapes under one name.
    impl_block_is_inherent_and_concrete(cx, pm.original, pm.ident, "process_manager", "Fulfilment");
}

/// A handler handles an event, a deadline or a rejection, never two of them; `#[start]` and
/// `#[correlate]` only mean something for an event.
fn check_attributes(cx: &Ctxt, handler: &PmHandler) {
    let attrs = &handler.attrs;
    let ident = handler.ident;
    if let (Some(deadline), Some(_)) = (&attrs.deadline, attrs.rejected) {
        cx.error_spanned_by(
            deadline.attr,
            format!("handler `{ident}` cannot be both `#[deadline]` and `#[rejected]`; write one handler for each"),
        );
    }
    let (what, why) = match handler.kind() {
        HandlerKind::Event => return,
        HandlerKind::Deadline => (
            "a `#[deadline]` handler",
            "deadlines fire on the instance that scheduled them",
        ),
        HandlerKind::Rejected => (
            "a `#[rejected]` handler",
            "rejections come back to the instance that sent the command",
        ),
    };
    if let Some(start) = attrs.start {
        cx.error_spanned_by(
            start,
            format!("`#[start]` only applies to event handlers, and `{ident}` is {what}: {why}; only an event can create an instance"),
        );
    }
    if let Some(correlate) = &attrs.correlate {
        cx.error_spanned_by(
            correlate.attr,
            format!(
                "`#[correlate]` only applies to event handlers, and `{ident}` is {what}: {why}"
            ),
        );
    }
}

fn shape(handler: &PmHandler) -> &'static str {
    match handler.kind() {
        HandlerKind::Event => EVENT_SHAPE,
        HandlerKind::Deadline => DEADLINE_SHAPE,
        HandlerKind::Rejected => REJECTED_SHAPE,
    }
}

/// A handler changes its instance's state, which the runtime stores after it.
fn handler_takes_mut_self(cx: &Ctxt, handler: &PmHandler) {
    let sig = &handler.original.sig;
    match sig.inputs.first() {
        Some(FnArg::Receiver(receiver))
            if receiver.colon_token.is_none()
                && receiver.reference.is_some()
                && receiver.mutability.is_some() => {}
        Some(FnArg::Receiver(receiver)) => cx.error_spanned_by(
            receiver,
            format!(
                "handler `{}` must take `&mut self`: it updates the instance's state, which is stored after it",
                handler.ident
            ),
        ),
        Some(FnArg::Typed(_)) | None => cx.error_spanned_by(
            &sig.ident,
            format!(
                "handler `{}` must be a method taking `&mut self`: `{}`",
                handler.ident,
                shape(handler)
            ),
        ),
    }
}

/// The dispatch passes exactly what the handler's kind handles, then the context.
fn handler_takes_its_parameters(cx: &Ctxt, handler: &PmHandler) {
    let sig = &handler.original.sig;
    let ident = handler.ident;
    let (wanted, input) = match handler.kind() {
        HandlerKind::Event => (2, "the event"),
        HandlerKind::Rejected => (2, "the rejected command `rejected: Rejected<CommandType>`"),
        HandlerKind::Deadline => (1, ""),
    };
    let params = &handler.params;
    let shape = shape(handler);
    if params.len() < wanted {
        let missing = match (params.len(), wanted) {
            (0, 2) => format!("{input} and the process context `cx: &mut ProcessContext`"),
            _ => "the process context `cx: &mut ProcessContext`".to_owned(),
        };
        // One parameter that looks like the context: more likely a deadline handler without
        // its attribute than an event handler without its context.
        let hint = match params.first().map(|param| &*param.ty) {
            Some(Type::Reference(reference))
                if handler.kind() == HandlerKind::Event && reference.mutability.is_some() =>
            {
                "; a deadline handler takes only the context and is marked `#[deadline(\"name\")]`"
            }
            _ => "",
        };
        let at = match sig.inputs.last() {
            Some(_) => sig.inputs.to_token_stream(),
            None => sig.ident.to_token_stream(),
        };
        cx.error_spanned_by(
            at,
            format!("handler `{ident}` is missing {missing}: `{shape}`{hint}"),
        );
    } else if params.len() > wanted {
        // The context comes last: when the last parameter is a `&mut`, the ones before the
        // context are the extra ones (a deadline handler given an event, say).
        let extra = match params.last().map(|param| &*param.ty) {
            Some(Type::Reference(last)) if last.mutability.is_some() => {
                let context = params.len() - 1;
                let input = wanted - 1;
                &params[input..context]
            }
            _ => &params[wanted..],
        };
        let takes = match handler.kind() {
            HandlerKind::Deadline => "a deadline handler takes only the process context",
            HandlerKind::Event => "it takes only the event and the process context",
            HandlerKind::Rejected => "it takes only the rejected command and the process context",
        };
        cx.error_spanned_by(
            quote!(#(#extra),*),
            format!("handler `{ident}` has too many parameters: {takes}: `{shape}`"),
        );
    }
    match (handler.kind(), handler.input_type()) {
        (HandlerKind::Rejected, Some(ty)) if rejected_command(ty).is_none() => {
            cx.error_spanned_by(
                ty,
                format!("the first parameter of `#[rejected]` handler `{ident}` must be `Rejected<CommandType>`, the command its aggregate refused: `{shape}`"),
            );
        }
        (HandlerKind::Event, Some(ty)) if rejected_command(ty).is_some() => {
            cx.error_spanned_by(
                ty,
                format!("handler `{ident}` takes a rejected command; mark it `#[rejected]`: `{REJECTED_SHAPE}`"),
            );
        }
        _ => {}
    }
}

/// The command type `C` of a type written `Rejected<C>` (with any path before it).
fn rejected_command(ty: &Type) -> Option<&Type> {
    let Type::Path(path) = ty else {
        return None;
    };
    let last = path.path.segments.last()?;
    if last.ident != "Rejected" {
        return None;
    }
    let PathArguments::AngleBracketed(arguments) = &last.arguments else {
        return None;
    };
    match arguments.args.iter().collect::<Vec<_>>()[..] {
        [GenericArgument::Type(command)] => Some(command),
        _ => None,
    }
}

/// Without a `#[start]` handler no event creates an instance, and every other input would be
/// ignored for want of one.
fn has_a_start_handler(cx: &Ctxt, pm: &ProcessManagerImpl) {
    let starts = pm
        .handlers_of(HandlerKind::Event)
        .any(|handler| handler.attrs.start.is_some());
    // A `#[start]` on another kind of handler is reported there already.
    let misplaced = pm.handlers.iter().any(|h| h.attrs.start.is_some());
    if !starts && !misplaced {
        cx.error_spanned_by(
            &pm.original.self_ty,
            format!("a #[process_manager] needs a `#[start]` event handler, for the event that creates an instance: `#[start] {EVENT_SHAPE}`"),
        );
    }
}

/// The event type decides which handler runs; two handlers for one type would make one of
/// them unreachable. Types are compared as written; two spellings of one type are still caught
/// by the generated event set's distinct-name assertion.
fn one_handler_per_event_type(cx: &Ctxt, pm: &ProcessManagerImpl) {
    let mut seen: HashMap<String, &PmHandler> = HashMap::new();
    for handler in pm.handlers_of(HandlerKind::Event) {
        let Some(event_type) = handler.input_type() else {
            continue;
        };
        let name = type_name(event_type);
        match seen.get(&name) {
            Some(first) if first.attrs.start.is_some() && handler.attrs.start.is_some() => cx
                .error_spanned_by(
                    event_type,
                    format!(
                        "`{name}` already has a `#[start]` handler, `{}`; each event type gets exactly one handler",
                        first.ident
                    ),
                ),
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

/// A rejection goes to the first handler whose command type matches; a second one for the same
/// command would never run.
fn one_handler_per_rejected_command(cx: &Ctxt, pm: &ProcessManagerImpl) {
    let mut seen: HashMap<String, &PmHandler> = HashMap::new();
    for handler in pm.handlers_of(HandlerKind::Rejected) {
        let Some(command) = handler.input_type().and_then(rejected_command) else {
            continue;
        };
        let name = type_name(command);
        match seen.get(&name) {
            Some(first) => cx.error_spanned_by(
                command,
                format!(
                    "rejections of `{name}` already have a handler, `{}`; each command type gets at most one `#[rejected]` handler",
                    first.ident
                ),
            ),
            None => {
                seen.insert(name, handler);
            }
        }
    }
}

/// Every event must say which instance it belongs to: by the block's `correlate = field`, or by
/// its handler's own `#[correlate(...)]`.
fn every_event_is_correlated(cx: &Ctxt, pm: &ProcessManagerImpl) {
    if pm.attrs.correlate_written || !pm.attrs.complete {
        return;
    }
    let uncorrelated: Vec<String> = pm
        .handlers_of(HandlerKind::Event)
        .filter(|handler| handler.attrs.correlate.is_none())
        .map(|handler| format!("`{}`", handler.ident))
        .collect();
    if uncorrelated.is_empty() {
        return;
    }
    let (handlers, have, own) = match uncorrelated.len() {
        1 => ("handler", "has", "its"),
        _ => ("handlers", "have", "their"),
    };
    cx.syn_error(syn::Error::new(
        Span::call_site(),
        format!(
            "missing `correlate` in #[process_manager]: event {handlers} {} {have} no `#[correlate(...)]` of {own} own; name the event field that holds the instance id, like `correlate = order_id`",
            uncorrelated.join(", ")
        ),
    ));
}

/// The `schedule` and `schedule_at` calls found in the handlers' bodies.
#[derive(Default)]
struct ScheduleCalls {
    /// The string literal first arguments.
    named: Vec<LitStr>,
    /// Some call's name is not a string literal, so which deadlines are scheduled is unknown.
    dynamic: bool,
}

/// A deadline no handler schedules would never fire, and a name scheduled without a handler
/// would fail the handler at run time. Only literal names in `.schedule("x", ...)` and
/// `.schedule_at("x", ...)` calls of the handlers' bodies can be read here; when one name is
/// computed, the deadlines are not required to be scheduled (one may be, by that call).
fn deadlines_are_scheduled_and_handled(cx: &Ctxt, pm: &ProcessManagerImpl) {
    let mut handled: HashSet<String> = HashSet::new();
    let mut names: Vec<&LitStr> = Vec::new();
    for handler in pm.handlers_of(HandlerKind::Deadline) {
        let Some(name) = handler
            .attrs
            .deadline
            .as_ref()
            .and_then(|d| d.name.as_ref())
        else {
            continue;
        };
        if handled.contains(&name.value()) {
            cx.error_spanned_by(
                name,
                format!(
                    "deadline {:?} already has a handler; each deadline name gets exactly one `#[deadline]` handler",
                    name.value()
                ),
            );
            continue;
        }
        handled.insert(name.value());
        names.push(name);
    }

    let mut calls = ScheduleCalls::default();
    for handler in &pm.handlers {
        find_schedule_calls(handler.original.block.to_token_stream(), &mut calls);
    }

    let mut known: Vec<String> = names
        .iter()
        .map(|name| format!("{:?}", name.value()))
        .collect();
    known.sort();
    for scheduled in &calls.named {
        if !handled.contains(&scheduled.value()) {
            let handled = match known.len() {
                0 => "this process manager handles no deadlines".to_owned(),
                _ => format!("the handled deadlines are {}", known.join(", ")),
            };
            cx.error_spanned_by(
                scheduled,
                format!(
                    "deadline {:?} has no handler; add `#[deadline({:?})] async fn name(&mut self, cx: &mut ProcessContext) -> Result<(), HandlerError>` ({handled})",
                    scheduled.value(),
                    scheduled.value()
                ),
            );
        }
    }
    if calls.dynamic {
        return;
    }
    let scheduled: HashSet<String> = calls.named.iter().map(LitStr::value).collect();
    for name in names {
        if !scheduled.contains(&name.value()) {
            cx.error_spanned_by(
                name,
                format!(
                    "deadline {:?} is never scheduled: no handler calls `cx.schedule({:?}, ...)` or `cx.schedule_at({:?}, ...)`",
                    name.value(),
                    name.value(),
                    name.value()
                ),
            );
        }
    }
}

/// Scans `tokens` (through every group, macro arguments included) for `.schedule(...)` and
/// `.schedule_at(...)`. A path call such as `ProcessContext::schedule(cx, ...)` is not read
/// and counts as a computed name.
fn find_schedule_calls(tokens: TokenStream, calls: &mut ScheduleCalls) {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    for (index, token) in tokens.iter().enumerate() {
        match token {
            TokenTree::Group(group) => find_schedule_calls(group.stream(), calls),
            TokenTree::Ident(ident) if ident == "schedule" || ident == "schedule_at" => {
                let Some(TokenTree::Group(args)) = tokens.get(index + 1) else {
                    continue;
                };
                if args.delimiter() != Delimiter::Parenthesis {
                    continue;
                }
                let previous = index.checked_sub(1).and_then(|i| tokens.get(i));
                match previous {
                    Some(TokenTree::Punct(dot)) if dot.as_char() == '.' => {
                        match literal_first_argument(args.stream()) {
                            Some(name) => calls.named.push(name),
                            None => calls.dynamic = true,
                        }
                    }
                    Some(TokenTree::Punct(colon)) if colon.as_char() == ':' => {
                        calls.dynamic = true;
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

/// The first argument of a call when it is exactly one string literal.
fn literal_first_argument(args: TokenStream) -> Option<LitStr> {
    let mut args = args.into_iter();
    let TokenTree::Literal(literal) = args.next()? else {
        return None;
    };
    match args.next() {
        None => {}
        Some(TokenTree::Punct(comma)) if comma.as_char() == ',' => {}
        Some(_) => return None,
    }
    match syn::Lit::new(literal) {
        syn::Lit::Str(name) => Some(name),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctxt::messages;
    use syn::{parse_quote, ItemImpl};

    fn errors(args: TokenStream, input: ItemImpl) -> Vec<String> {
        let cx = Ctxt::new();
        let pm = ProcessManagerImpl::from_syn(&cx, args, &input);
        check_process_manager(&cx, &pm);
        messages(cx)
    }

    fn block(args: TokenStream) -> Vec<String> {
        errors(
            args,
            parse_quote! {
                impl F {
                    #[start]
                    async fn on_placed(&mut self, e: Placed, cx: &mut ProcessContext) -> R {
                        cx.schedule("payment", d);
                        Ok(())
                    }
                    #[deadline("payment")]
                    async fn overdue(&mut self, cx: &mut ProcessContext) -> R { Ok(()) }
                }
            },
        )
    }

    #[test]
    fn a_complete_block_is_valid() {
        assert!(block(quote!(name = "fulfilment", correlate = order_id)).is_empty());
        let all: Vec<String> = errors(
            quote!(name = "f", correlate = id),
            parse_quote! {
                impl F {
                    #[start]
                    #[correlate(with = ids::of)]
                    async fn a(&mut self, e: A, cx: &mut ProcessContext) -> R {
                        cx.schedule_at("x", t);
                        println!("{}", cx.schedule("y", d));
                        Ok(())
                    }
                    async fn b(&mut self, e: B, cx: &mut ProcessContext) -> R { cx.cancel("x"); Ok(()) }
                    #[deadline("x")]
                    async fn x(&mut self, cx: &mut ProcessContext) -> R { Ok(()) }
                    #[deadline("y")]
                    async fn y(&mut self, cx: &mut ProcessContext) -> R { Ok(()) }
                    #[rejected]
                    async fn r(&mut self, r: pm::Rejected<Reserve>, cx: &mut ProcessContext) -> R { Ok(()) }
                    #[rejected]
                    async fn s(&mut self, r: Rejected<Ship>, cx: &mut ProcessContext) -> R { Ok(()) }
                }
            },
        );
        assert!(all.is_empty(), "{all:?}");
    }

    #[test]
    fn name_and_correlate_rules() {
        assert_eq!(
            block(quote!(correlate = id)),
            ["missing `name` in #[process_manager]"]
        );
        assert_eq!(
            block(quote!(name = "a.b", correlate = id)),
            ["process manager name \"a.b\" must be one NATS subject token: non-empty, only ASCII letters, digits, `_` and `-`"]
        );
        assert_eq!(
            block(quote!(name = "a")),
            ["missing `correlate` in #[process_manager]: event handler `on_placed` has no `#[correlate(...)]` of its own; name the event field that holds the instance id, like `correlate = order_id`"]
        );
        // Every event handler says its own: no block-level field needed.
        assert!(errors(
            quote!(name = "a"),
            parse_quote! {
                impl F {
                    #[start]
                    #[correlate(order)]
                    async fn a(&mut self, e: A, cx: &mut C) -> R { Ok(()) }
                }
            },
        )
        .is_empty());
    }

    #[test]
    fn start_rules() {
        assert_eq!(
            errors(
                quote!(name = "a", correlate = id),
                parse_quote! {
                    impl F {
                        async fn a(&mut self, e: A, cx: &mut C) -> R { Ok(()) }
                    }
                },
            ),
            ["a #[process_manager] needs a `#[start]` event handler, for the event that creates an instance: `#[start] async fn name(&mut self, event: EventType, cx: &mut ProcessContext) -> Result<(), HandlerError>`"]
        );
        assert_eq!(
            errors(
                quote!(name = "a", correlate = id),
                parse_quote! {
                    impl F {
                        #[start]
                        async fn a(&mut self, e: A, cx: &mut C) -> R { Ok(()) }
                        #[start]
                        async fn b(&mut self, e: A, cx: &mut C) -> R { Ok(()) }
                        async fn c(&mut self, e: A, cx: &mut C) -> R { Ok(()) }
                        #[start]
                        #[correlate(x)]
                        #[rejected]
                        async fn r(&mut self, r: Rejected<X>, cx: &mut C) -> R { Ok(()) }
                    }
                },
            ),
            [
                "`#[start]` only applies to event handlers, and `r` is a `#[rejected]` handler: rejections come back to the instance that sent the command; only an event can create an instance",
                "`#[correlate]` only applies to event handlers, and `r` is a `#[rejected]` handler: rejections come back to the instance that sent the command",
                "`A` already has a `#[start]` handler, `a`; each event type gets exactly one handler",
                "`A` already has a handler, `a`; each event type gets exactly one handler",
            ]
        );
    }

    #[test]
    fn handler_shapes() {
        assert_eq!(
            errors(
                quote!(name = "a", correlate = id),
                parse_quote! {
                    impl F {
                        #[start]
                        fn a(&self, e: A) -> R { cx.schedule("d", x); cx.schedule("e", x); Ok(()) }
                        async fn b<T>(&mut self, e: B, cx: &mut C, extra: T) -> R { Ok(()) }
                        async fn c(&mut self, cx: &mut C) -> R { Ok(()) }
                        #[deadline("d")]
                        async fn d(&mut self) -> R { Ok(()) }
                        #[deadline("e")]
                        async fn e(self: &mut Self, e: E, cx: &mut C) -> R { Ok(()) }
                        #[rejected]
                        async fn r(&mut self, r: Reserve, cx: &mut C) -> R { Ok(()) }
                        async fn s(&mut self, r: Rejected<S>, cx: &mut C) -> R { Ok(()) }
                        async fn t(cx: &mut C) -> R { Ok(()) }
                    }
                },
            ),
            [
                "handler `a` must be an `async fn`; every method of a #[process_manager] impl block is a handler: `async fn name(&mut self, event: EventType, cx: &mut ProcessContext) -> Result<(), HandlerError>`",
                "handler `a` must take `&mut self`: it updates the instance's state, which is stored after it",
                "handler `a` is missing the process context `cx: &mut ProcessContext`: `async fn name(&mut self, event: EventType, cx: &mut ProcessContext) -> Result<(), HandlerError>`",
                "handler `b` cannot be generic",
                "handler `b` has too many parameters: it takes only the event and the process context: `async fn name(&mut self, event: EventType, cx: &mut ProcessContext) -> Result<(), HandlerError>`",
                "handler `c` is missing the process context `cx: &mut ProcessContext`: `async fn name(&mut self, event: EventType, cx: &mut ProcessContext) -> Result<(), HandlerError>`; a deadline handler takes only the context and is marked `#[deadline(\"name\")]`",
                "handler `d` is missing the process context `cx: &mut ProcessContext`: `#[deadline(\"name\")] async fn name(&mut self, cx: &mut ProcessContext) -> Result<(), HandlerError>`",
                "handler `e` must take `&mut self`: it updates the instance's state, which is stored after it",
                "handler `e` has too many parameters: a deadline handler takes only the process context: `#[deadline(\"name\")] async fn name(&mut self, cx: &mut ProcessContext) -> Result<(), HandlerError>`",
                "the first parameter of `#[rejected]` handler `r` must be `Rejected<CommandType>`, the command its aggregate refused: `#[rejected] async fn name(&mut self, rejected: Rejected<CommandType>, cx: &mut ProcessContext) -> Result<(), HandlerError>`",
                "handler `s` takes a rejected command; mark it `#[rejected]`: `#[rejected] async fn name(&mut self, rejected: Rejected<CommandType>, cx: &mut ProcessContext) -> Result<(), HandlerError>`",
                "handler `t` must be a method taking `&mut self`: `async fn name(&mut self, event: EventType, cx: &mut ProcessContext) -> Result<(), HandlerError>`",
                "handler `t` is missing the process context `cx: &mut ProcessContext`: `async fn name(&mut self, event: EventType, cx: &mut ProcessContext) -> Result<(), HandlerError>`; a deadline handler takes only the context and is marked `#[deadline(\"name\")]`",
            ]
        );
    }

    #[test]
    fn deadline_rules() {
        assert_eq!(
            errors(
                quote!(name = "a", correlate = id),
                parse_quote! {
                    impl F {
                        #[start]
                        async fn a(&mut self, e: A, cx: &mut C) -> R {
                            cx.schedule("x", d);
                            cx.schedule_at("typo", t);
                            Ok(())
                        }
                        #[deadline("x")]
                        async fn x(&mut self, cx: &mut C) -> R { Ok(()) }
                        #[deadline("x")]
                        async fn x2(&mut self, cx: &mut C) -> R { Ok(()) }
                        #[deadline("never")]
                        async fn n(&mut self, cx: &mut C) -> R { Ok(()) }
                        #[deadline("a.b")]
                        #[rejected]
                        async fn bad(&mut self, cx: &mut C) -> R { cx.schedule("a.b", d); Ok(()) }
                    }
                },
            ),
            [
                "handler `bad` cannot be both `#[deadline]` and `#[rejected]`; write one handler for each",
                "deadline name \"a.b\" must be one NATS subject token: non-empty, only ASCII letters, digits, `_` and `-`",
                "deadline \"x\" already has a handler; each deadline name gets exactly one `#[deadline]` handler",
                "deadline \"typo\" has no handler; add `#[deadline(\"typo\")] async fn name(&mut self, cx: &mut ProcessContext) -> Result<(), HandlerError>` (the handled deadlines are \"a.b\", \"never\", \"x\")",
                "deadline \"never\" is never scheduled: no handler calls `cx.schedule(\"never\", ...)` or `cx.schedule_at(\"never\", ...)`",
            ]
        );
    }

    #[test]
    fn a_computed_deadline_name_skips_the_never_scheduled_rule() {
        for call in [
            quote!(cx.schedule(NAME, d)),
            quote!(cx.schedule(&format!("x"), d)),
            quote!(ProcessContext::schedule(cx, "x", d)),
        ] {
            let found = errors(
                quote!(name = "a", correlate = id),
                parse_quote! {
                    impl F {
                        #[start]
                        async fn a(&mut self, e: A, cx: &mut C) -> R { #call; cx.schedule("nope", d); Ok(()) }
                        #[deadline("x")]
                        async fn x(&mut self, cx: &mut C) -> R { Ok(()) }
                    }
                },
            );
            assert_eq!(
                found,
                ["deadline \"nope\" has no handler; add `#[deadline(\"nope\")] async fn name(&mut self, cx: &mut ProcessContext) -> Result<(), HandlerError>` (the handled deadlines are \"x\")"],
                "{call}"
            );
        }
    }

    #[test]
    fn block_rules() {
        assert_eq!(
            errors(
                quote!(name = "a", correlate = id),
                parse_quote! {
                    impl<T> ProcessManager for (T,) {
                        #[start]
                        async fn a(&mut self, e: A, cx: &mut C) -> R { Ok(()) }
                    }
                },
            ),
            [
                "#[process_manager] goes on an inherent `impl Type { ... }` block of handlers, not on a trait impl",
                "#[process_manager] does not support generic impl blocks; use a concrete type",
                "#[process_manager] needs a named type, like `impl Fulfilment { ... }`",
            ]
        );
    }
}
