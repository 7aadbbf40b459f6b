//! How far an in-memory durable got: its acknowledged positions in the store.

use std::sync::Arc;

use super::durable::Durable;
use crate::store::InMemoryStore;
use crate::subscriber::progress::{Progress, ProgressFuture};

pub(super) struct MemoryProgress {
    pub(super) store: InMemoryStore,
    pub(super) durable: Arc<Durable>,
    pub(super) name: String,
}

impl std::fmt::Debug for MemoryProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryProgress")
            .field("durable", &self.name)
            .finish_non_exhaustive()
    }
}

impl Progress for MemoryProgress {
    fn durable(&self) -> &str {
        &self.name
    }

    fn settled_through(&self, position: u64) -> ProgressFuture<'_, bool> {
        Box::pin(async move { Ok(self.durable.acknowledged_through() >= position) })
    }

    fn newest(&self) -> ProgressFuture<'_, u64> {
        Box::pin(async move { Ok(self.store.last_position()) })
    }
}
