//! The JetStream backend of process managers.

mod schedule;
mod start;

pub use start::start;
