//! Publishes the server refused for lack of permission.
//!
//! nats-server answers a publish to a subject the user may not publish to with an asynchronous
//! `-ERR 'Permissions Violation for Publish to "<subject>"'` and never replies to the request,
//! which then times out. The connection's event callback records each refusal here, so a timed
//! out append can tell the caller it was refused, and on which subject.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many refusals are remembered; older ones are forgotten.
const KEEP: usize = 256;

/// Refusals the server reported on one connection, newest last.
#[derive(Debug, Clone, Default)]
pub(crate) struct Refusals(Arc<Mutex<VecDeque<(Instant, String)>>>);

impl Refusals {
    /// Records the subject of a permission violation in a server error, if it is one.
    pub(crate) fn record(&self, server_error: &str) {
        let Some(subject) = refused_publish_subject(server_error) else {
            return;
        };
        let mut refusals = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if refusals.len() == KEEP {
            refusals.pop_front();
        }
        refusals.push_back((Instant::now(), subject.to_owned()));
    }

    /// The subject under `stem` (`<stem>.<anything>`) refused within `within`, if any.
    pub(crate) fn refused_under(&self, stem: &str, within: Duration) -> Option<String> {
        let refusals = self.0.lock().unwrap_or_else(|p| p.into_inner());
        refusals
            .iter()
            .rev()
            .take_while(|(at, _)| at.elapsed() <= within)
            .find(|(_, subject)| {
                subject
                    .strip_prefix(stem)
                    .is_some_and(|rest| rest.starts_with('.'))
            })
            .map(|(_, subject)| subject.clone())
    }
}

/// `<subject>` of `... Permissions Violation for Publish to "<subject>" ...`.
fn refused_publish_subject(server_error: &str) -> Option<&str> {
    let lower = server_error.to_ascii_lowercase();
    let at = lower.find("permissions violation for publish to")?;
    let rest = &server_error[at..];
    let open = rest.find('"')? + 1;
    let close = rest[open..].find('"')? + open;
    Some(&rest[open..close])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_refused_subjects_under_a_stem() {
        let refusals = Refusals::default();
        refusals.record("slow consumer");
        refusals.record(r#"Permissions Violation for Publish to "bank.account.a1.deposited""#);
        let within = Duration::from_secs(60);
        assert_eq!(
            refusals.refused_under("bank.account.a1", within).as_deref(),
            Some("bank.account.a1.deposited")
        );
        assert_eq!(refusals.refused_under("bank.account.a", within), None);
        assert_eq!(refusals.refused_under("bank.account.a2", within), None);
    }
}
