//! One append, top to bottom: what the store knows of the aggregate, the guarded publish, and
//! what the server's answer means.

use std::collections::HashMap;

use async_nats::jetstream::stream::LastRawMessageErrorKind;

use super::append::{self, Guard, Published};
use super::cache::{self, AggregateState, Head};
use super::error::JetStreamError;
use super::headers;
use super::shared::Shared;
use crate::store::{
    AggregateKey, AppendOutcome, ExpectedVersion, NewEvent, StoreError, StoredEvent,
};

/// How many times an [`ExpectedVersion::Any`] append is sent after losing a race.
const ANY_VERSION_ATTEMPTS: u32 = 100;

/// How many times an [`ExpectedVersion::Exact`] append is sent: a stale cache can make the
/// first attempt fail, and the fresh state then decides (conflict or duplicate); the server
/// may also refuse a guard whose version is right while another write to the aggregate is in
/// flight on a clustered stream (error 10164), which is a conflict like any other.
const EXACT_VERSION_ATTEMPTS: u32 = 3;

// The paths that read from the server are boxed where an append awaits them: they are rare,
// and inline they would make every append's future (moved several times per call) many
// kilobytes larger.

/// What the append knows of the aggregate, and whether it came from the server just now.
struct Known {
    head: Head,
    fresh: bool,
}

pub(super) async fn append(
    store: &Shared,
    key: &AggregateKey,
    expected: ExpectedVersion,
    command_id: Option<&str>,
    events: Vec<NewEvent>,
) -> Result<AppendOutcome, StoreError> {
    check_sizes(store, command_id, &events)?;
    let filter = store.filter(key);
    let stem = &filter[..filter.len() - 2];
    // Only what the append needs is copied out of the cache, never the whole state.
    let mut known = match store.cache.head(key, command_id) {
        Some(head) => Known { head, fresh: false },
        None => Known {
            head: Box::pin(fresh(store, key, command_id)).await?,
            fresh: true,
        },
    };
    let allowed = match expected {
        ExpectedVersion::Any => ANY_VERSION_ATTEMPTS,
        ExpectedVersion::Exact(_) => EXACT_VERSION_ATTEMPTS,
    };
    let mut attempts = 0u32;
    loop {
        let head = known.head;
        if let Some(first) = head.prior {
            return Ok(first.as_duplicate());
        }
        if events.is_empty() {
            return Err(StoreError::EmptyAppend(key.clone()));
        }
        if let ExpectedVersion::Exact(v) = expected {
            // The cache is never ahead of the stream (versions only grow), so a cached
            // version above `v` is a certain conflict; one below may be stale.
            if v != head.version {
                if !known.fresh && head.version < v {
                    known = Box::pin(refreshed(store, key, command_id)).await?;
                    continue;
                }
                return Err(conflict(key, v, head.version));
            }
        }
        if attempts == allowed {
            return Err(match expected {
                ExpectedVersion::Exact(v) => conflict(key, v, head.version),
                ExpectedVersion::Any => JetStreamError::Contention {
                    aggregate: key.to_string(),
                    attempts,
                }
                .into(),
            });
        }
        attempts += 1;
        let guard = Guard {
            subject_stem: stem,
            filter: &filter,
            expected_last_seq: head.last_seq,
            command_id,
            key,
        };
        let messages = append::messages(&guard, &events, head.version + 1);
        // Boxed once here rather than moved whole through the refusal watch.
        let publish = Box::pin(append::commit(&store.client, &store.batches, messages));
        match store.unless_refused(stem, publish).await {
            Ok(Published::Stored(position)) => {
                let appended = events.len();
                return Ok(record(store, key, head, command_id, appended, position));
            }
            // Refused: certainly not stored, so what the store knows still holds.
            Err(error @ JetStreamError::PermissionDenied { .. }) => return Err(error.into()),
            Err(error) => return Box::pin(unknown_outcome(store, key, command_id, error)).await,
            Ok(Published::Duplicate(_) | Published::Conflict) => {
                // Another writer appended: an idempotent append reads only what it added (a
                // plain one looks its last event up through the leader).
                known = match command_id {
                    Some(_) => Known {
                        head: Box::pin(catch_up(store, key, command_id)).await?,
                        fresh: true,
                    },
                    None => Box::pin(refreshed(store, key, command_id)).await?,
                };
            }
        }
    }
}

fn conflict(key: &AggregateKey, expected: u64, actual: u64) -> StoreError {
    StoreError::Conflict {
        aggregate: key.clone(),
        expected,
        actual,
    }
}

/// Refuses events the server would refuse for their size, before anything is sent.
fn check_sizes(
    store: &Shared,
    command_id: Option<&str>,
    events: &[NewEvent],
) -> Result<(), JetStreamError> {
    let max = store.max_payload();
    for event in events {
        let bytes = headers::message_size(event, command_id);
        if max > 0 && bytes > max {
            return Err(JetStreamError::EventTooLarge {
                event: event.name.to_owned(),
                bytes,
                max,
            });
        }
    }
    Ok(())
}

/// Remembers a stored commit: the new version and position, and the command's outcome.
fn record(
    store: &Shared,
    key: &AggregateKey,
    head: Head,
    command_id: Option<&str>,
    appended: usize,
    last_position: u64,
) -> AppendOutcome {
    let outcome = AppendOutcome {
        first_sequence: head.version + 1,
        last_sequence: head.version + appended as u64,
        last_position,
        duplicate: false,
    };
    store.cache.appended(key, head.version, outcome, command_id);
    // The cached history, if any, is left to catch up on its next load (one read it makes
    // anyway): extending it here would cost every append a copy of its events.
    outcome
}

/// After a publish whose outcome is unknown (timeout, lost connection, refused batch): forget
/// the version, and for an idempotent command look whether it landed.
async fn unknown_outcome(
    store: &Shared,
    key: &AggregateKey,
    command_id: Option<&str>,
    error: JetStreamError,
) -> Result<AppendOutcome, StoreError> {
    store.cache.remove(key);
    if command_id.is_some() {
        if let Ok(Head {
            prior: Some(first), ..
        }) = scan(store, key, command_id).await
        {
            return Ok(first.as_duplicate());
        }
    }
    Err(error.into())
}

/// What an append with `command_id` needs to know of `key`: from the cache, or the server.
pub(super) async fn head(
    store: &Shared,
    key: &AggregateKey,
    command_id: Option<&str>,
) -> Result<Head, StoreError> {
    match store.cache.head(key, command_id) {
        Some(head) => Ok(head),
        None => Box::pin(fresh(store, key, command_id)).await,
    }
}

async fn refreshed(
    store: &Shared,
    key: &AggregateKey,
    command_id: Option<&str>,
) -> Result<Known, StoreError> {
    store.cache.remove(key);
    Ok(Known {
        head: fresh(store, key, command_id).await?,
        fresh: true,
    })
}

/// Current state from the server, with the command's first outcome when `command_id` is given.
async fn fresh(
    store: &Shared,
    key: &AggregateKey,
    command_id: Option<&str>,
) -> Result<Head, StoreError> {
    if command_id.is_some() {
        return scan(store, key, command_id).await;
    }
    let state = last(store, key).await?;
    let head = Head {
        version: state.version,
        last_seq: state.last_seq,
        prior: None,
    };
    store.cache.put(key, state);
    Ok(head)
}

/// The aggregate's whole history: caches the state it implies, and returns what an append
/// with `command_id` needs (the command's first outcome is found even when the aggregate has
/// too many command ids to cache).
async fn scan(
    store: &Shared,
    key: &AggregateKey,
    command_id: Option<&str>,
) -> Result<Head, StoreError> {
    let events = super::read::load(&store.reader(), &store.filter(key), 1, None, |_| true).await?;
    let state = AggregateState::from_history(&events);
    let head = state.head(command_id).unwrap_or(Head {
        version: state.version,
        last_seq: state.last_seq,
        prior: command_id.and_then(|command| cache::outcome_of(&events, command)),
    });
    store.cache.put(key, state);
    store.histories.put(key, 1, 0, events);
    Ok(head)
}

/// After a conflict: extends the cached state with the events appended since (one read of the
/// aggregate's tail) instead of reading its whole history again, which on a contended
/// aggregate with a long history would make every conflict cost the whole history.
async fn catch_up(
    store: &Shared,
    key: &AggregateKey,
    command_id: Option<&str>,
) -> Result<Head, StoreError> {
    let cache = &store.cache;
    if let Some(known) = cache.head(key, command_id) {
        let filter = store.filter(key);
        let start = known.last_seq + 1;
        let newer =
            super::read::read(&store.reader(), &filter, start, usize::MAX, |_| true).await?;
        if newer.is_empty() || cache.extend_known(key, known.version + 1, &newer) {
            store.histories.extend(key, newer);
            if let Some(head) = cache.head(key, command_id) {
                return Ok(head);
            }
        }
    }
    cache.remove(key);
    fresh(store, key, command_id).await
}

/// The aggregate's version and last stream sequence, read through the stream leader (never
/// direct get, which a follower may answer a moment behind).
pub(super) async fn last(store: &Shared, key: &AggregateKey) -> Result<AggregateState, StoreError> {
    let filter = store.filter(key);
    match last_event(store, &filter, key).await? {
        Some(event) => {
            let mut state = AggregateState::default();
            state.remember(event.sequence, event.position);
            Ok(state)
        }
        None => Ok(AggregateState {
            commands: Some(HashMap::new()),
            ..AggregateState::default()
        }),
    }
}

/// The newest event under `filter` (one aggregate's subjects, `aggregate` in messages), read
/// through the stream leader; `None` when there is none.
pub(super) async fn last_event(
    store: &Shared,
    filter: &str,
    aggregate: &(dyn std::fmt::Display + Sync),
) -> Result<Option<StoredEvent>, StoreError> {
    match store.stream.get_last_raw_message_by_subject(filter).await {
        Ok(message) => {
            let prefix_len = store.config.prefix.len();
            let rest = message.subject.get(prefix_len + 1..).unwrap_or("");
            let event = headers::decode(rest, message.sequence, &message.headers, message.payload)?;
            Ok(Some(event))
        }
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => {
            Err(JetStreamError::request(format!("look up the last event of {aggregate}"), e).into())
        }
    }
}
