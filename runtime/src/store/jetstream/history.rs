//! The recent events of recently used aggregates, bounded in bytes, so loading a warm aggregate
//! reads from the server only what was appended since (one direct get, which usually finds
//! nothing): a command on an aggregate this process touched recently costs one read and one
//! append, whatever the aggregate's length or the stream's.
//!
//! Stored events never change, so what is cached stays true; only its end may be behind the
//! stream, and every load reads on from there.

use std::sync::{Mutex, MutexGuard};

use lru::LruCache;

use crate::store::{AggregateKey, StoredEvent};

/// Bytes of cached events per store unless configured otherwise.
pub(crate) const DEFAULT_HISTORY_BYTES: usize = 64 * 1024 * 1024;

/// One aggregate's events from `first_sequence` on, without gaps, up to the version the store
/// last saw.
struct Run {
    first_sequence: u64,
    /// Stream position of event `first_sequence - 1` (0 when there is none): where a read of
    /// what follows an empty run starts.
    start_position: u64,
    events: Vec<StoredEvent>,
    bytes: usize,
}

impl Run {
    fn version(&self) -> u64 {
        self.first_sequence - 1 + self.events.len() as u64
    }
    fn last_position(&self) -> u64 {
        self.events
            .last()
            .map_or(self.start_position, |e| e.position)
    }
}

/// What a cached run offers a load from `from`.
pub(crate) struct Cached {
    /// The cached events from `from` on.
    pub events: Vec<StoredEvent>,
    /// The aggregate's version at the end of the run.
    pub version: u64,
    /// Stream position of the run's last event: read on after it.
    pub last_position: u64,
}

pub(crate) struct Histories {
    max_bytes: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    runs: LruCache<AggregateKey, Run>,
    bytes: usize,
}

fn size(event: &StoredEvent) -> usize {
    // The strings and the payload, plus the struct and the map's share.
    std::mem::size_of::<StoredEvent>()
        + 64
        + event.payload.len()
        + event.aggregate_type.len()
        + event.aggregate_id.len()
        + event.name.len()
        + event.correlation_id.len()
        + event.causation_id.as_ref().map_or(0, String::len)
        + event.command_id.as_ref().map_or(0, String::len)
        + (event.headers.iter())
            .map(|(k, v)| k.len() + v.len() + 48)
            .sum::<usize>()
}

impl Histories {
    pub fn new(max_bytes: usize) -> Self {
        Histories {
            max_bytes,
            inner: Mutex::new(Inner {
                runs: LruCache::unbounded(),
                bytes: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Runs are replaced or extended whole under the lock, so a poisoned map is consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached events of `key` from sequence `from` on, when the cached run starts at or
    /// before `from`.
    pub fn from(&self, key: &AggregateKey, from: u64) -> Option<Cached> {
        let mut inner = self.lock();
        let run = inner.runs.get(key)?;
        if run.first_sequence > from {
            return None;
        }
        let skip = usize::try_from(from - run.first_sequence).unwrap_or(usize::MAX);
        Some(Cached {
            events: run.events.iter().skip(skip).cloned().collect(),
            version: run.version(),
            last_position: run.last_position(),
        })
    }

    /// Caches `events`, the aggregate's events from `first_sequence` (whose predecessor is at
    /// stream position `start_position`, 0 for none) to its version when read, replacing what
    /// was cached. Events that do not run on without gaps from `first_sequence` are not cached.
    pub fn put(
        &self,
        key: &AggregateKey,
        first_sequence: u64,
        start_position: u64,
        events: Vec<StoredEvent>,
    ) {
        let contiguous =
            (events.iter().enumerate()).all(|(i, e)| e.sequence == first_sequence + i as u64);
        if self.max_bytes == 0 || first_sequence == 0 || !contiguous {
            return;
        }
        let bytes = events.iter().map(size).sum::<usize>() + 128;
        if bytes > self.max_bytes / 4 {
            // One long aggregate would push out many short ones.
            self.remove(key);
            return;
        }
        let mut inner = self.lock();
        let run = Run {
            first_sequence,
            start_position,
            events,
            bytes,
        };
        if let Some(old) = inner.runs.put(key.clone(), run) {
            inner.bytes -= old.bytes;
        }
        inner.bytes += bytes;
        self.evict(&mut inner);
    }

    /// Adds events that follow the cached run directly; a run they do not follow is dropped
    /// (the next load reads the aggregate again).
    pub fn extend(&self, key: &AggregateKey, events: Vec<StoredEvent>) {
        let Some(first) = events.first() else {
            return;
        };
        let mut inner = self.lock();
        let Some(run) = inner.runs.get_mut(key) else {
            return;
        };
        let follows = run.version() + 1 == first.sequence && run.last_position() < first.position;
        if !follows {
            let bytes = run.bytes;
            inner.runs.pop(key);
            inner.bytes -= bytes;
            return;
        }
        let added = events.iter().map(size).sum::<usize>();
        run.events.extend(events);
        run.bytes += added;
        let too_long = run.bytes > self.max_bytes / 4;
        inner.bytes += added;
        if too_long {
            if let Some(run) = inner.runs.pop(key) {
                inner.bytes -= run.bytes;
            }
        }
        self.evict(&mut inner);
    }

    pub fn remove(&self, key: &AggregateKey) {
        let mut inner = self.lock();
        if let Some(run) = inner.runs.pop(key) {
            inner.bytes -= run.bytes;
        }
    }

    fn evict(&self, inner: &mut Inner) {
        while inner.bytes > self.max_bytes {
            match inner.runs.pop_lru() {
                Some((_, run)) => inner.bytes -= run.bytes,
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AggregateId;

    use crate::store::jetstream::fixture::key;

    fn event(sequence: u64) -> StoredEvent {
        crate::store::jetstream::fixture::event(sequence, None)
    }

    #[test]
    fn serves_loads_from_within_the_run_and_extends_only_without_gaps() {
        let histories = Histories::new(1 << 20);
        histories.put(&key(), 3, 20, vec![event(3), event(4)]);
        assert!(histories.from(&key(), 2).is_none(), "starts after 2");
        let cached = histories.from(&key(), 4).unwrap();
        assert_eq!(
            (cached.events.len(), cached.version, cached.last_position),
            (1, 4, 40)
        );
        histories.extend(&key(), vec![event(5)]);
        assert_eq!(histories.from(&key(), 3).unwrap().events.len(), 3);
        histories.extend(&key(), vec![event(7)]);
        assert!(histories.from(&key(), 3).is_none(), "a gap drops the run");
        histories.put(&key(), 3, 20, vec![event(4)]);
        assert!(
            histories.from(&key(), 3).is_none(),
            "not contiguous: not cached"
        );
    }

    #[test]
    fn an_empty_run_after_a_snapshot_reads_on_from_its_position() {
        let histories = Histories::new(1 << 20);
        histories.put(&key(), 991, 9_910, Vec::new());
        let cached = histories.from(&key(), 991).unwrap();
        assert_eq!((cached.version, cached.last_position), (990, 9_910));
        assert!(histories.from(&key(), 1).is_none());
    }

    #[test]
    fn stays_within_its_bytes() {
        let one = size(&event(1)) + 128;
        let histories = Histories::new(one * 8);
        for n in 0..20 {
            let key = AggregateKey::new("account", AggregateId::new(format!("a{n}")).unwrap());
            histories.put(&key, 1, 0, vec![event(1)]);
        }
        assert!(histories.lock().bytes <= one * 8);
        assert!(histories.lock().runs.len() < 20);
    }
}
