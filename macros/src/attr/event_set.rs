//! `#[event_set(retired("old_name", ...))]`.

use super::{for_each_key, unknown_key, Slot, Symbol, EVENT_SET, RETIRED};
use crate::ctxt::Ctxt;
use syn::punctuated::Punctuated;
use syn::{Attribute, LitStr, Token};

const ATTRIBUTE: &str = "#[event_set]";
const KEYS: &[Symbol] = &[RETIRED];

/// Everything written in the `#[event_set]` attributes of one enum.
pub struct EventSetAttrs {
    /// Wire names of event types that were removed from the code; stored events with these
    /// names are dropped on read instead of failing.
    pub retired: Vec<LitStr>,
}

pub fn parse(cx: &Ctxt, attrs: &[Attribute]) -> EventSetAttrs {
    let mut retired = Slot::new(cx, ATTRIBUTE, RETIRED);

    for_each_key(cx, attrs, EVENT_SET, |meta| {
        if meta.path == RETIRED {
            let content;
            syn::parenthesized!(content in meta.input);
            let names = Punctuated::<LitStr, Token![,]>::parse_terminated(&content)?;
            retired.set(&meta.path, names.into_iter().collect());
        } else {
            unknown_key(cx, meta, ATTRIBUTE, KEYS)?;
        }
        Ok(())
    });

    EventSetAttrs {
        retired: retired.get().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    #[test]
    fn reads_retired_names() {
        let attrs: Vec<Attribute> = vec![parse_quote!(#[event_set(retired("a", "b",))])];
        let cx = Ctxt::new();
        let parsed = parse(&cx, &attrs);
        cx.check().unwrap();
        let names: Vec<String> = parsed.retired.iter().map(LitStr::value).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn rejects_a_second_retired_list() {
        let attrs: Vec<Attribute> = vec![
            parse_quote!(#[event_set(retired("a"))]),
            parse_quote!(#[event_set(retired("b"))]),
        ];
        let cx = Ctxt::new();
        let parsed = parse(&cx, &attrs);
        assert_eq!(parsed.retired.len(), 1);
        assert_eq!(
            cx.check().unwrap_err().to_string(),
            "duplicate `retired` in #[event_set]"
        );
    }

    #[test]
    fn rejects_non_string_names() {
        let attrs: Vec<Attribute> = vec![parse_quote!(#[event_set(retired(old))])];
        let cx = Ctxt::new();
        parse(&cx, &attrs);
        assert_eq!(
            cx.check().unwrap_err().to_string(),
            "expected string literal"
        );
    }
}
