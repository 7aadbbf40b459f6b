//! Where a subscriber keeps its server-side state.

/// Where a subscriber's server-side state (dead letters, completion log) is kept: like the
/// event stream, so it survives what the events survive.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placement {
    pub(crate) storage: async_nats::jetstream::stream::StorageType,
    pub(crate) replicas: usize,
}

impl Placement {
    pub(crate) fn of(store: &crate::JetStreamStore) -> Self {
        use async_nats::jetstream::stream::StorageType;
        Placement {
            storage: match store.config().storage {
                crate::JetStreamStorage::Memory => StorageType::Memory,
                _ => StorageType::File,
            },
            replicas: store.config().replicas,
        }
    }
}
