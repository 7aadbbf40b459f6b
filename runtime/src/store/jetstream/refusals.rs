//! Publishes the server refused for lack of permission.
//!
//! nats-server answers a publish to a subject the user may not publish to with an asynchronous
//! `-ERR 'Permissions Violation for Publish to "<subject>"'` and never replies to the request,
//! which would time out. The connection's event callback records each refusal here; an append
//! waits for its ack or a refusal of its subject, whichever comes first, and so reports the
//! refusal at once, naming the subject.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::error::JetStreamError;

/// How many refusals are remembered; older ones are forgotten.
const KEEP: usize = 256;

/// One refusal: its number (from 1, in the order they came), when, and the refused subject.
type Refusal = (u64, Instant, String);

/// Refusals the server reported on one connection, newest last.
#[derive(Debug, Clone)]
pub(crate) struct Refusals(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    log: Mutex<VecDeque<Refusal>>,
    /// The number of the latest refusal, so a waiting append wakes up when one comes.
    latest: watch::Sender<u64>,
}

impl Default for Refusals {
    fn default() -> Self {
        Refusals(Arc::new(Shared {
            log: Mutex::new(VecDeque::new()),
            latest: watch::Sender::new(0),
        }))
    }
}

impl Refusals {
    /// Records the subject of a permission violation in a server error, if it is one.
    pub(crate) fn record(&self, server_error: &str) {
        let Some(subject) = refused_publish_subject(server_error) else {
            return;
        };
        let mut log = self.0.log.lock().unwrap_or_else(|p| p.into_inner());
        if log.len() == KEEP {
            log.pop_front();
        }
        let number = *self.0.latest.borrow() + 1;
        log.push_back((number, Instant::now(), subject.to_owned()));
        // Announced under the log's lock, so a woken waiter finds the refusal in the log.
        self.0.latest.send_replace(number);
    }

    /// The subject under `stem` (`<stem>.<anything>`) refused within `within`, if any.
    pub(crate) fn refused_under(&self, stem: &str, within: Duration) -> Option<String> {
        self.find(stem, |(_, at, _)| at.elapsed() <= within)
    }

    /// Watches for refusals from now on; create it before publishing.
    pub(crate) fn watch(&self) -> RefusalWatch {
        let latest = self.0.latest.subscribe();
        let since = *latest.borrow();
        RefusalWatch {
            refusals: self.clone(),
            latest,
            since,
        }
    }

    fn find(&self, stem: &str, recent: impl Fn(&Refusal) -> bool) -> Option<String> {
        let log = self.0.log.lock().unwrap_or_else(|p| p.into_inner());
        log.iter()
            .rev()
            .take_while(|refusal| recent(refusal))
            .find(|(_, _, subject)| is_under(subject, stem))
            .map(|(_, _, subject)| subject.clone())
    }
}

impl Refusals {
    /// Runs `publish` (messages under `stem`) until its ack, or until the server refuses one of
    /// its subjects: it answers a refused publish only with an asynchronous `-ERR`, never with
    /// a reply, and nothing is stored. A publish that timed out after a refusal of its subject
    /// is reported as that refusal too.
    pub(crate) async fn unless_refused<T>(
        &self,
        stem: &str,
        timeout: Duration,
        publish: impl std::future::Future<Output = Result<T, JetStreamError>>,
    ) -> Result<T, JetStreamError> {
        // Watching starts before the first message leaves, so no refusal can slip past.
        let refusal = self.watch();
        tokio::select! {
            biased;
            result = publish => result.map_err(|error| match error {
                JetStreamError::Timeout => match self.refused_under(stem, timeout * 2) {
                    Some(subject) => JetStreamError::PermissionDenied { subject },
                    None => JetStreamError::Timeout,
                },
                other => other,
            }),
            subject = refusal.refused_under(stem) => {
                Err(JetStreamError::PermissionDenied { subject })
            }
        }
    }
}

/// Refusals from the moment it was created on.
pub(crate) struct RefusalWatch {
    refusals: Refusals,
    latest: watch::Receiver<u64>,
    since: u64,
}

impl RefusalWatch {
    /// Waits for a refusal of a subject under `stem` (pending forever if none comes).
    pub(crate) async fn refused_under(mut self, stem: &str) -> String {
        loop {
            let since = self.since;
            if let Some(subject) = self.refusals.find(stem, |(number, ..)| *number > since) {
                return subject;
            }
            if self.latest.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }
}

fn is_under(subject: &str, stem: &str) -> bool {
    subject
        .strip_prefix(stem)
        .is_some_and(|rest| rest.starts_with('.'))
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

    #[tokio::test]
    async fn a_watch_sees_only_later_refusals_of_its_stem() {
        let refusals = Refusals::default();
        refusals.record(r#"Permissions Violation for Publish to "bank.account.a1.opened""#);
        let watch = refusals.watch();
        let waiting = tokio::spawn(async move { watch.refused_under("bank.account.a1").await });
        tokio::task::yield_now().await;
        refusals.record(r#"Permissions Violation for Publish to "bank.account.a2.opened""#);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiting.is_finished(),
            "an earlier refusal or another stem woke it"
        );
        refusals.record(r#"Permissions Violation for Publish to "bank.account.a1.deposited""#);
        assert_eq!(waiting.await.unwrap(), "bank.account.a1.deposited");
    }
}
