//! Snapshots in a JetStream key-value bucket, one key per aggregate.
//!
//! Keys are `<hex(type)>.<hex(id)>`: hex keeps any id (unicode, `=`, `/` ...) within the
//! characters KV keys allow. Values are a small binary header followed by the state.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::JetStreamError;
use crate::store::{AggregateKey, Snapshot, StoreError};

const MAGIC: &[u8; 4] = b"JSS1";
const HEADER_LEN: usize = 4 + 4 + 8 + 8;

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

/// The bucket key of an aggregate's snapshot.
pub(crate) fn key(aggregate: &AggregateKey) -> String {
    format!(
        "{}.{}",
        hex(aggregate.aggregate_type.as_bytes()),
        hex(aggregate.id.as_str().as_bytes())
    )
}

pub(crate) fn encode(snapshot: &Snapshot) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER_LEN + snapshot.state.len());
    out.put_slice(MAGIC);
    out.put_u32(snapshot.schema_version);
    out.put_u64(snapshot.version);
    out.put_u64(snapshot.position);
    out.put_slice(&snapshot.state);
    out.freeze()
}

pub(crate) fn decode(value: Bytes, revision: u64) -> Result<Snapshot, StoreError> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        position: revision,
        reason: format!("snapshot: {reason}"),
        source: None,
    };
    if value.len() < HEADER_LEN || &value[..4] != MAGIC {
        return Err(corrupt("not a jetsource snapshot"));
    }
    let num = |range: std::ops::Range<usize>| -> Result<u64, StoreError> {
        let mut buf = [0u8; 8];
        let slice = value
            .get(range.clone())
            .ok_or_else(|| corrupt("truncated"))?;
        buf[8 - slice.len()..].copy_from_slice(slice);
        Ok(u64::from_be_bytes(buf))
    };
    let schema = u32::try_from(num(4..8)?).map_err(|_| corrupt("schema version"))?;
    Ok(Snapshot {
        schema_version: schema,
        version: num(8..16)?,
        position: num(16..24)?,
        state: value.slice(HEADER_LEN..),
    })
}

pub(crate) async fn load(
    kv: &async_nats::jetstream::kv::Store,
    aggregate: &AggregateKey,
) -> Result<Option<Snapshot>, StoreError> {
    let entry = kv
        .entry(key(aggregate))
        .await
        .map_err(|e| JetStreamError::request(format!("read the snapshot of {aggregate}"), e))?;
    match entry {
        Some(entry) if entry.operation == async_nats::jetstream::kv::Operation::Put => {
            decode(entry.value, entry.revision).map(Some)
        }
        _ => Ok(None),
    }
}

/// Stores `snapshot` unless the bucket holds one of a later version already (compare and set,
/// so concurrent savers never replace a newer snapshot with an older one).
pub(crate) async fn save(
    kv: &async_nats::jetstream::kv::Store,
    max_payload: usize,
    aggregate: &AggregateKey,
    snapshot: &Snapshot,
) -> Result<(), StoreError> {
    let value = encode(snapshot);
    if value.len() + 512 > max_payload {
        return Err(JetStreamError::SnapshotTooLarge {
            bytes: value.len(),
            max: max_payload,
        }
        .into());
    }
    let key = key(aggregate);
    for _ in 0..8 {
        let current = kv
            .entry(key.clone())
            .await
            .map_err(|e| JetStreamError::request(format!("read the snapshot of {aggregate}"), e))?;
        let written = match current {
            Some(entry) => {
                if entry.operation == async_nats::jetstream::kv::Operation::Put {
                    if let Ok(existing) = decode(entry.value.clone(), entry.revision) {
                        if !crate::store::contract::snapshot_replaces(&existing, snapshot) {
                            return Ok(());
                        }
                    }
                }
                kv.update(&key, value.clone(), entry.revision)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            None => kv
                .create(&key, value.clone())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        };
        match written {
            Ok(()) => return Ok(()),
            // Lost a compare-and-set race: read again.
            Err(e) => tracing::debug!(%aggregate, error = %e, "snapshot write raced, retrying"),
        }
    }
    Err(JetStreamError::Contention {
        aggregate: aggregate.to_string(),
        attempts: 8,
    }
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AggregateId;

    #[test]
    fn snapshot_round_trips_and_keys_are_kv_safe() {
        let snapshot = Snapshot {
            schema_version: 3,
            version: 1000,
            position: 123_456,
            state: Bytes::from_static(b"{\"balance\":5}"),
        };
        assert_eq!(decode(encode(&snapshot), 1).unwrap(), snapshot);
        assert!(decode(Bytes::from_static(b"nope"), 1).is_err());
        let key = key(&AggregateKey::new(
            "account",
            AggregateId::new("#=/x~").unwrap(),
        ));
        assert!(key.chars().all(|c| c.is_ascii_hexdigit() || c == '.'));
    }
}
