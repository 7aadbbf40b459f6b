//! Compile-time behaviour of the derives, `#[subscriber]` and `#[process_manager]`: every
//! `pass` file must compile (and run), every `fail` file must fail with exactly the diagnostic
//! in its `.stderr` beside it.
//!
//! Regenerate the expected output with
//! `TRYBUILD=overwrite cargo test -p jetsource-tests --test ui`, then read every changed
//! `.stderr`: each must show one clear error at the user's own tokens. Paths are relative to
//! tests/, the package's directory.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    for macro_name in [
        "event",
        "event_set",
        "aggregate",
        "subscriber",
        "process_manager",
    ] {
        cases.pass(format!("ui/{macro_name}/pass/*.rs"));
        cases.compile_fail(format!("ui/{macro_name}/fail/*.rs"));
    }
}
