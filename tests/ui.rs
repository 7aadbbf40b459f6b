//! Compile-time behaviour of the derives: every `pass` file must compile (and run), every
//! `fail` file must fail with exactly the diagnostic in its `.stderr` beside it.
//!
//! Regenerate the expected output with `TRYBUILD=overwrite cargo test --test ui`, then read
//! every changed `.stderr`: each must show one clear error at the user's own tokens.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    for derive in ["event", "event_set", "aggregate"] {
        cases.pass(format!("tests/ui/{derive}/pass/*.rs"));
        cases.compile_fail(format!("tests/ui/{derive}/fail/*.rs"));
    }
}
