//! `#[process_manager(name = "...", correlate = field)]` on the impl block, and the handler
//! attributes on its methods: `#[start]`, `#[correlate(field)]` or
//! `#[correlate(with = path::to::fn)]`, `#[deadline("name")]` and `#[rejected]`.
//!
//! Like `#[subscriber]`'s, the block's keys are the attribute macro's own arguments, so a
//! missing key is reported at the attribute itself. The handler attributes are inert helpers
//! read here and stripped from the block the macro emits.

use super::{
    string_value, unknown_key, Slot, Symbol, CORRELATE, DEADLINE, NAME, REJECTED, START, WITH,
};
use crate::ctxt::Ctxt;
use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::parse::{ParseStream, Parser};
use syn::{Attribute, Expr, ExprLit, ExprPath, Lit, LitStr, Member, Meta, Path, Token};

const ATTRIBUTE: &str = "#[process_manager]";
const KEYS: &[Symbol] = &[NAME, CORRELATE];
/// The handler attributes, which the emitted block must not keep.
const HELPERS: &[Symbol] = &[START, CORRELATE, DEADLINE, REJECTED];

const CORRELATE_EXPECTED: &str = "`#[correlate]` expects a field of the event, like `#[correlate(order_id)]`, or a function from `&Event` to an id, like `#[correlate(with = path::to::fn)]`";

/// Everything written in `#[process_manager(...)]`.
pub struct ProcessManagerAttrs {
    pub name: Option<LitStr>,
    /// The default correlation field of every event handler without `#[correlate(...)]`.
    pub correlate: Option<Member>,
    /// `correlate` was written, even if its value was bad (and reported): it is not missing.
    pub correlate_written: bool,
    /// The arguments were read to the end: a key not written is really missing (after a syntax
    /// error it may just not have been read).
    pub complete: bool,
}

pub fn parse(cx: &Ctxt, args: TokenStream) -> ProcessManagerAttrs {
    let mut name = Slot::new(cx, ATTRIBUTE, NAME);
    let mut correlate = Slot::new(cx, ATTRIBUTE, CORRELATE);
    let mut correlate_written = false;

    // `syn::meta::parser` rejects empty input; `#[process_manager]` reads as "no keys" so the
    // missing `name` is named instead.
    let complete = args.is_empty() || {
        let parser = syn::meta::parser(|meta| {
            if meta.path == NAME {
                name.set_parsed(&meta, string_value(cx, &meta)?);
            } else if meta.path == CORRELATE {
                correlate_written = true;
                correlate.set_parsed(&meta, correlate_value(cx, &meta)?);
            } else {
                unknown_key(cx, &meta, ATTRIBUTE, KEYS)?;
            }
            Ok(())
        });
        match Parser::parse2(parser, args) {
            Ok(()) => true,
            Err(error) => {
                cx.syn_error(error);
                false
            }
        }
    };

    let attribute = complete.then(|| syn::Ident::new("process_manager", Span::call_site()));
    ProcessManagerAttrs {
        name: name.required(attribute),
        correlate: correlate.get(),
        correlate_written,
        complete,
    }
}

/// `correlate = order_id` (or `correlate = 0` for a tuple struct): a field, not a string.
fn correlate_value(cx: &Ctxt, meta: &ParseNestedMeta) -> syn::Result<Option<Member>> {
    let value = meta.value()?.parse::<Expr>()?;
    let field = match &value {
        Expr::Path(ExprPath {
            attrs, qself, path, ..
        }) if attrs.is_empty() && qself.is_none() => path.get_ident().cloned().map(Member::Named),
        Expr::Lit(ExprLit {
            lit: Lit::Int(index),
            ..
        }) => syn::parse2::<Member>(index.to_token_stream()).ok(),
        _ => None,
    };
    if field.is_none() {
        cx.error_spanned_by(
            &value,
            "`correlate` expects the name of the field of each handled event that holds the instance id, like `correlate = order_id`; a handler can choose its own with `#[correlate(field)]` or `#[correlate(with = path::to::fn)]`",
        );
    }
    Ok(field)
}

/// How one event handler finds the instance id in its event.
pub enum Correlate {
    /// `#[correlate(order_id)]`: a field of the event.
    Field(Member),
    /// `#[correlate(with = path::to::fn)]`: a function `fn(&Event) -> impl ToString`.
    With(Path),
}

/// `#[correlate(...)]` on a handler; `how` is `None` when its argument was bad (and reported).
pub struct CorrelateAttr<'a> {
    pub attr: &'a Attribute,
    pub how: Option<Correlate>,
}

/// `#[deadline("name")]` on a handler; `name` is `None` when it was bad (and reported).
pub struct DeadlineAttr<'a> {
    pub attr: &'a Attribute,
    pub name: Option<LitStr>,
}

/// The helper attributes of one method. Each is kept with its attribute, so misplaced ones are
/// reported where they are written.
#[derive(Default)]
pub struct HandlerAttrs<'a> {
    pub start: Option<&'a Attribute>,
    pub correlate: Option<CorrelateAttr<'a>>,
    pub deadline: Option<DeadlineAttr<'a>>,
    pub rejected: Option<&'a Attribute>,
}

/// Reads the helper attributes of the method `method`.
pub fn parse_handler<'a>(
    cx: &Ctxt,
    method: &syn::Ident,
    attrs: &'a [Attribute],
) -> HandlerAttrs<'a> {
    let mut parsed = HandlerAttrs::default();
    for attr in attrs {
        let path = attr.path();
        let duplicate = if *path == START {
            no_arguments(cx, attr, START);
            parsed.start.replace(attr).is_some()
        } else if *path == REJECTED {
            no_arguments(cx, attr, REJECTED);
            parsed.rejected.replace(attr).is_some()
        } else if *path == DEADLINE {
            let name = deadline_name(cx, attr);
            let deadline = DeadlineAttr { attr, name };
            parsed.deadline.replace(deadline).is_some()
        } else if *path == CORRELATE {
            let how = correlate_how(cx, attr);
            let correlate = CorrelateAttr { attr, how };
            parsed.correlate.replace(correlate).is_some()
        } else {
            false
        };
        if duplicate {
            cx.error_spanned_by(
                attr,
                format!(
                    "duplicate `#[{}]` on handler `{method}`",
                    path.to_token_stream()
                ),
            );
        }
    }
    parsed
}

/// Whether `attr` is one of the handler attributes this macro reads (and strips).
pub fn is_helper(attr: &Attribute) -> bool {
    HELPERS.iter().any(|helper| *attr.path() == *helper)
}

/// `#[start]` and `#[rejected]` are markers.
fn no_arguments(cx: &Ctxt, attr: &Attribute, symbol: Symbol) {
    if !matches!(attr.meta, Meta::Path(_)) {
        cx.error_spanned_by(attr, format!("`#[{symbol}]` takes no arguments"));
    }
}

/// `#[deadline("payment")]`.
fn deadline_name(cx: &Ctxt, attr: &Attribute) -> Option<LitStr> {
    let name = match &attr.meta {
        Meta::List(_) => attr.parse_args::<LitStr>().ok(),
        Meta::Path(_) | Meta::NameValue(_) => None,
    };
    if name.is_none() {
        cx.error_spanned_by(
            attr,
            "`#[deadline]` expects the deadline's name, like `#[deadline(\"payment\")]`",
        );
    }
    name
}

/// `#[correlate(field)]` or `#[correlate(with = path::to::fn)]`.
fn correlate_how(cx: &Ctxt, attr: &Attribute) -> Option<Correlate> {
    let how = match &attr.meta {
        Meta::List(_) => attr.parse_args_with(correlate_args).ok(),
        Meta::Path(_) | Meta::NameValue(_) => None,
    };
    if how.is_none() {
        cx.error_spanned_by(attr, CORRELATE_EXPECTED);
    }
    how
}

fn correlate_args(input: ParseStream) -> syn::Result<Correlate> {
    if input.peek(syn::Ident) && input.peek2(Token![=]) {
        let key: Path = input.parse()?;
        if key != WITH {
            return Err(syn::Error::new_spanned(key, CORRELATE_EXPECTED));
        }
        input.parse::<Token![=]>()?;
        Ok(Correlate::With(input.parse()?))
    } else {
        Ok(Correlate::Field(input.parse()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctxt::messages;
    use quote::quote;
    use syn::parse_quote;

    #[test]
    fn reads_name_and_correlate() {
        let cx = Ctxt::new();
        let attrs = parse(&cx, quote!(name = "fulfilment", correlate = order_id));
        cx.check().unwrap();
        assert_eq!(attrs.name.unwrap().value(), "fulfilment");
        assert!(matches!(attrs.correlate, Some(Member::Named(field)) if field == "order_id"));
        assert!(attrs.complete);

        let cx = Ctxt::new();
        let attrs = parse(&cx, quote!(name = "f", correlate = 0));
        cx.check().unwrap();
        assert!(matches!(attrs.correlate, Some(Member::Unnamed(index)) if index.index == 0));
    }

    #[test]
    fn reports_all_mistakes_together() {
        let cx = Ctxt::new();
        let attrs = parse(
            &cx,
            quote!(name = "a", name = "b", colour = 1, correlate = "order_id"),
        );
        assert_eq!(attrs.name.unwrap().value(), "a");
        assert!(attrs.correlate.is_none() && attrs.correlate_written);
        assert_eq!(
            messages(cx),
            [
                "duplicate `name` in #[process_manager]",
                "unknown key `colour` in #[process_manager]; expected one of: `name`, `correlate`",
                "`correlate` expects the name of the field of each handled event that holds the instance id, like `correlate = order_id`; a handler can choose its own with `#[correlate(field)]` or `#[correlate(with = path::to::fn)]`",
            ]
        );
    }

    #[test]
    fn no_arguments_means_missing_name() {
        let cx = Ctxt::new();
        let attrs = parse(&cx, TokenStream::new());
        assert!(attrs.name.is_none() && attrs.complete);
        assert_eq!(messages(cx), ["missing `name` in #[process_manager]"]);
    }

    #[test]
    fn a_syntax_error_does_not_also_report_missing_keys() {
        let cx = Ctxt::new();
        let attrs = parse(&cx, quote!(name "a"));
        assert!(!attrs.complete);
        assert_eq!(messages(cx), ["expected `=`"]);
    }

    #[test]
    fn reads_the_handler_attributes() {
        let attrs: Vec<Attribute> = vec![
            parse_quote!(#[start]),
            parse_quote!(#[correlate(order)]),
            parse_quote!(#[doc = "kept"]),
        ];
        let cx = Ctxt::new();
        let method: syn::Ident = parse_quote!(on_placed);
        let parsed = parse_handler(&cx, &method, &attrs);
        cx.check().unwrap();
        assert!(parsed.start.is_some() && parsed.deadline.is_none() && parsed.rejected.is_none());
        let how = parsed.correlate.unwrap().how;
        assert!(matches!(how, Some(Correlate::Field(Member::Named(f))) if f == "order"));
        assert_eq!(
            attrs.iter().map(is_helper).collect::<Vec<_>>(),
            [true, true, false]
        );

        let attrs: Vec<Attribute> = vec![
            parse_quote!(#[deadline("payment")]),
            parse_quote!(#[correlate(with = crate::ids::order)]),
            parse_quote!(#[rejected]),
        ];
        let cx = Ctxt::new();
        let parsed = parse_handler(&cx, &method, &attrs);
        cx.check().unwrap();
        assert_eq!(parsed.deadline.unwrap().name.unwrap().value(), "payment");
        assert!(matches!(
            parsed.correlate.unwrap().how,
            Some(Correlate::With(path)) if path.segments.len() == 3
        ));
        assert!(parsed.rejected.is_some());
    }

    #[test]
    fn reports_bad_handler_attributes() {
        let attrs: Vec<Attribute> = vec![
            parse_quote!(#[start(now)]),
            parse_quote!(#[start]),
            parse_quote!(#[deadline]),
            parse_quote!(#[deadline(payment)]),
            parse_quote!(#[correlate(using = f)]),
            parse_quote!(#[rejected = 1]),
        ];
        let cx = Ctxt::new();
        let method: syn::Ident = parse_quote!(h);
        let parsed = parse_handler(&cx, &method, &attrs);
        assert!(parsed.deadline.unwrap().name.is_none());
        assert!(parsed.correlate.unwrap().how.is_none());
        assert_eq!(
            messages(cx),
            [
                "`#[start]` takes no arguments",
                "duplicate `#[start]` on handler `h`",
                "`#[deadline]` expects the deadline's name, like `#[deadline(\"payment\")]`",
                "`#[deadline]` expects the deadline's name, like `#[deadline(\"payment\")]`",
                "duplicate `#[deadline]` on handler `h`",
                CORRELATE_EXPECTED,
                "`#[rejected]` takes no arguments",
            ]
        );
    }
}
