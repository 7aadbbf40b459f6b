//! Code generation, one submodule per macro. Generated code names everything by absolute path
//! (`::core::...`, `::jetsource::__private::...`) so it works whatever the user's module has
//! in scope, and marks every impl `#[automatically_derived]`.

pub mod aggregate;
pub mod event;
pub mod event_set;
pub mod process_manager;
pub mod subscriber;

use crate::ctxt::Ctxt;
use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::{DeriveInput, LitStr};

/// Runs one derive: parse, build the borrowed view, validate, and generate either the real
/// impl or, after errors, the errors plus a stub impl. The stub keeps one mistake from
/// cascading into "trait not implemented" errors wherever the type is used.
pub fn run<'a, T>(
    input: &'a DeriveInput,
    from_syn: impl FnOnce(&Ctxt, &'a DeriveInput) -> T,
    check: impl FnOnce(&Ctxt, &T),
    generate: impl FnOnce(&T) -> TokenStream,
    stub: impl FnOnce(&T) -> TokenStream,
) -> TokenStream {
    let cx = Ctxt::new();
    let view = from_syn(&cx, input);
    check(&cx, &view);
    match cx.check() {
        Ok(()) => generate(&view),
        Err(errors) => {
            let mut output = errors.to_compile_error();
            output.extend(stub(&view));
            output
        }
    }
}

/// Parses the derive input, or returns the parse error as tokens.
pub fn parse_input(input: TokenStream) -> Result<DeriveInput, TokenStream> {
    syn::parse2(input).map_err(|error| error.to_compile_error())
}

/// `impl<...> #trait_path for #ident<...>` with the input's own generics, for stub impls: the
/// real derives reject generic types, and a stub without the generics would add an error of
/// its own. For a generic type, the trait's supertraits (`supertraits`) are assumed in a where
/// clause rather than proven, since unbounded parameters could not prove them; a concrete type
/// gets no such clause, because a false bound on a concrete type is an error of its own.
pub fn stub_impl_header(
    input: &DeriveInput,
    trait_path: TokenStream,
    supertraits: TokenStream,
) -> TokenStream {
    let mut generics = input.generics.clone();
    if !generics.params.is_empty() {
        generics
            .make_where_clause()
            .predicates
            .push(syn::parse_quote!(Self: #supertraits));
    }
    let (impl_generics, type_generics, where_clause) = generics.split_for_impl();
    let ident = &input.ident;
    quote! {
        #[automatically_derived]
        impl #impl_generics #trait_path for #ident #type_generics #where_clause
    }
}

/// The supertraits every jetsource trait has.
pub fn thread_safe() -> TokenStream {
    quote!(::core::marker::Send + ::core::marker::Sync + 'static)
}

/// A check across types that only the compiler can make (it needs another type's constants):
/// a const assertion, spanned at the user's tokens so the failure is reported there.
pub fn const_assert(span: Span, condition: TokenStream, message: &str) -> TokenStream {
    // The message is a format string; braces in type names must not be read as arguments.
    let message = LitStr::new(&message.replace('{', "{{").replace('}', "}}"), span);
    quote_spanned! {span=>
        const _: () = ::core::assert!(#condition, #message);
    }
}

/// A type as the user would write it, for messages: `v1::Opened`, not `v1 :: Opened`.
pub fn type_name(ty: &impl ToTokens) -> String {
    let spaced: Vec<char> = ty.to_token_stream().to_string().chars().collect();
    let is_word = |c: Option<&char>| c.is_some_and(|c| c.is_alphanumeric() || *c == '_');
    let mut name = String::with_capacity(spaced.len());
    for (i, c) in spaced.iter().enumerate() {
        let previous = i.checked_sub(1).and_then(|i| spaced.get(i));
        let next = spaced.get(i + 1);
        // Keep the spaces a person writes: after a comma and between two words (`dyn Trait`).
        let keep = previous == Some(&',') || (is_word(previous) && is_word(next));
        if *c != ' ' || keep {
            name.push(*c);
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    #[test]
    fn type_names_read_like_source() {
        let ty: syn::Type = parse_quote!(crate::v1::Opened<u8, ::x::Y>);
        assert_eq!(type_name(&ty), "crate::v1::Opened<u8, ::x::Y>");
    }

    #[test]
    fn const_assert_escapes_braces() {
        let tokens = const_assert(Span::call_site(), quote!(true), "a {b}");
        assert_eq!(
            tokens.to_string(),
            "const _ : () = :: core :: assert ! (true , \"a {{b}}\") ;"
        );
    }

    #[test]
    fn stub_header_keeps_generics_and_assumes_supertraits() {
        let input: DeriveInput = parse_quote!(
            struct E<T: Clone>(T);
        );
        let header = stub_impl_header(&input, quote!(Tr), thread_safe());
        assert_eq!(
            header.to_string(),
            "# [automatically_derived] impl < T : Clone > Tr for E < T > where Self : :: core :: marker :: Send + :: core :: marker :: Sync + 'static"
        );
        let concrete: DeriveInput = parse_quote!(
            struct E;
        );
        assert_eq!(
            stub_impl_header(&concrete, quote!(Tr), thread_safe()).to_string(),
            "# [automatically_derived] impl Tr for E"
        );
    }
}
