//! Loading one aggregate: from the events this process holds, reading on from where they end;
//! or, for an aggregate it does not hold, from the closest known position.

use tracing::Instrument;

use super::cache::AggregateState;
use super::read;
use super::shared::Shared;
use crate::store::{AggregateKey, StoreError, StoredEvent};

/// Loads `key` from `from_sequence` inside the `jetsource.load` span.
pub(super) async fn traced(
    store: &Shared,
    key: &AggregateKey,
    from_sequence: u64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let span = tracing::debug_span!(
        "jetsource.load",
        aggregate_type = key.aggregate_type,
        aggregate_id = %key.id,
        from = from_sequence,
        events = tracing::field::Empty,
    );
    let events = load(store, key, from_sequence.max(1))
        .instrument(span.clone())
        .await?;
    span.record("events", events.len());
    Ok(events)
}

async fn load(
    store: &Shared,
    key: &AggregateKey,
    from_sequence: u64,
) -> Result<Vec<StoredEvent>, StoreError> {
    if let Some(cached) = store.histories.from(key, from_sequence) {
        // What was appended since the cached run ends; usually nothing, in one direct get.
        let filter = store.filter(key);
        let start = cached.last_position + 1;
        let newer = read::read(&store.reader(), &filter, start, usize::MAX, |_| true).await?;
        if newer
            .first()
            .is_none_or(|e| e.sequence == cached.version + 1)
        {
            remember(store, key, cached.version, cached.last_position, &newer);
            let mut events = cached.events;
            let skip = newer.partition_point(|e| e.sequence < from_sequence);
            events.extend_from_slice(&newer[skip..]);
            store.histories.extend(key, newer);
            return Ok(events);
        }
        // The stream does not go on from the cached run (it was purged or rewritten): forget it.
        store.histories.remove(key);
    }
    let (start, before) = start_of(store, key, from_sequence);
    // How many events the read will go through, when the cache knows (it picks the read path).
    let expected = (store.cache.head(key, None)).map(|head| head.version.saturating_sub(before));
    let filter = store.filter(key);
    let mut events = read::load(&store.reader(), &filter, start, expected, |_| true).await?;
    // Remember what the load showed, so the append that usually follows needs no lookup, and
    // the next load reads only what follows.
    if before == 0 {
        store.cache.put(key, AggregateState::from_history(&events));
    } else {
        remember(store, key, before, start - 1, &events);
    }
    store
        .histories
        .put(key, before + 1, start - 1, events.clone());
    events.retain(|e| e.sequence >= from_sequence);
    Ok(events)
}

/// Where a read of `key` from `from_sequence` starts (a stream sequence), and the aggregate
/// version just before that point.
fn start_of(store: &Shared, key: &AggregateKey, from_sequence: u64) -> (u64, u64) {
    // Reading on from a version whose position the cache knows: start right after it.
    let known = match from_sequence {
        1 => Some(0),
        _ => store.cache.position_of(key, from_sequence - 1),
    };
    if let Some(position) = known {
        return (position + 1, from_sequence - 1);
    }
    let anchors = store.anchors.lock().unwrap_or_else(|p| p.into_inner());
    match anchors.get(key).copied() {
        Some((version, position)) if version < from_sequence => (position + 1, version),
        _ => (1, 0),
    }
}

/// Tells the version cache what a read showed: `events` follow version `before`, whose event is
/// at `position`.
fn remember(
    store: &Shared,
    key: &AggregateKey,
    before: u64,
    position: u64,
    events: &[StoredEvent],
) {
    let cache = &store.cache;
    if !events.is_empty() {
        cache.extend(key, before + 1, events);
    } else if before > 0 && cache.head(key, None).is_none() {
        let mut state = AggregateState::default();
        state.remember(before, position);
        cache.put(key, state);
    }
}
