//! Derives for [jetsource](https://docs.rs/jetsource): `Event`, `EventSet` and `Aggregate`, and
//! the `#[subscriber]` and `#[process_manager]` attributes.
//! Use them through the `jetsource` crate, which re-exports them with their documentation;
//! the generated code refers to `::jetsource` and does not work without it.
//!
//! Each macro runs the same stages: `ast` borrows the input and parses its attributes
//! (`attr`), `valid` checks the rules that one type can decide, and `expand` generates the
//! impl, with const assertions for the rules that span several types. Errors are collected in
//! a `ctxt::Ctxt` and reported together.

mod ast;
mod attr;
mod ctxt;
mod expand;
mod valid;

use proc_macro::TokenStream;

/// Derives `jetsource::Event`; see the `jetsource` crate.
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    expand::event::derive(input.into()).into()
}

/// Derives `jetsource::EventSet`; see the `jetsource` crate.
#[proc_macro_derive(EventSet, attributes(event_set))]
pub fn derive_event_set(input: TokenStream) -> TokenStream {
    expand::event_set::derive(input.into()).into()
}

/// Derives `jetsource::Aggregate`; see the `jetsource` crate.
#[proc_macro_derive(Aggregate, attributes(aggregate))]
pub fn derive_aggregate(input: TokenStream) -> TokenStream {
    expand::aggregate::derive(input.into()).into()
}

/// Turns an `impl` block of event handlers into a `jetsource::subscriber::Subscriber`; see the
/// `jetsource` crate.
#[proc_macro_attribute]
pub fn subscriber(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::subscriber::attribute(args.into(), item.into()).into()
}

/// Turns an `impl` block of handlers into a `jetsource::process_manager::ProcessManager`, with
/// `#[start]`, `#[correlate(...)]`, `#[deadline("...")]` and `#[rejected]` on its handlers; see
/// the `jetsource` crate.
#[proc_macro_attribute]
pub fn process_manager(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::process_manager::attribute(args.into(), item.into()).into()
}
