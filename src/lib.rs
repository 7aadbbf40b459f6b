//! Holds the workspace-level examples and tests.
