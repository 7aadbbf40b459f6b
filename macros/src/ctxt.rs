//! Error collection, after serde_derive's `Ctxt`: every stage records its errors here instead
//! of stopping at the first, so the user sees all attribute mistakes from one build.

use quote::ToTokens;
use std::cell::RefCell;
use std::fmt::Display;

/// Collects the errors of one derive invocation.
///
/// It must be consumed with [`Ctxt::check`]: dropping it unchecked would silently swallow
/// errors, so that is a bug in this crate and panics (during our own tests, not a user's build,
/// because every entry point calls `check`).
pub struct Ctxt {
    errors: RefCell<Option<Vec<syn::Error>>>,
}

impl Ctxt {
    pub fn new() -> Self {
        Ctxt {
            errors: RefCell::new(Some(Vec::new())),
        }
    }

    /// Records an error pointing at the tokens of `user_tokens`.
    pub fn error_spanned_by<T: ToTokens, M: Display>(&self, user_tokens: T, message: M) {
        self.syn_error(syn::Error::new_spanned(
            user_tokens.into_token_stream(),
            message,
        ));
    }

    /// Records an error produced by `syn` (usually a parse error).
    pub fn syn_error(&self, error: syn::Error) {
        self.errors
            .borrow_mut()
            .as_mut()
            .expect("Ctxt used after check")
            .push(error);
    }

    /// Consumes the context, combining all recorded errors into one.
    pub fn check(self) -> syn::Result<()> {
        let errors = self.errors.borrow_mut().take().unwrap_or_default();
        let mut errors = errors.into_iter();
        let Some(mut combined) = errors.next() else {
            return Ok(());
        };
        for error in errors {
            combined.combine(error);
        }
        Err(combined)
    }
}

impl Drop for Ctxt {
    fn drop(&mut self) {
        if !std::thread::panicking() && self.errors.borrow().is_some() {
            panic!("jetsource-macros bug: Ctxt dropped without check");
        }
    }
}

/// The messages a checked context collected, for unit tests of the parsing and validation stages.
#[cfg(test)]
pub fn messages(cx: Ctxt) -> Vec<String> {
    match cx.check() {
        Ok(()) => Vec::new(),
        Err(error) => error.into_iter().map(|e| e.to_string()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combines_all_errors_in_order() {
        let cx = Ctxt::new();
        cx.error_spanned_by(quote::quote!(a), "first");
        cx.error_spanned_by(quote::quote!(b), "second");
        let messages: Vec<String> = cx
            .check()
            .unwrap_err()
            .into_iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(messages, ["first", "second"]);
    }

    #[test]
    fn no_errors_is_ok() {
        let cx = Ctxt::new();
        assert!(cx.check().is_ok());
    }
}
