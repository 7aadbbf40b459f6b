//! Holds the workspace-level examples (`examples/`), which use jetsource as a user's crate
//! would. The tests and benchmarks are the package `jetsource-tests` (`tests/Cargo.toml`).
