//! State that parts of the crate attach to a shared value without the value's type naming
//! them: the in-memory store carries its subscribers' durable consumers this way, so the store
//! lives below the subscribers and imports nothing of them.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One value of each attached type, created on first use.
#[derive(Default)]
pub(crate) struct Attachments {
    by_type: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl Attachments {
    /// The attached `T`, created with `T::default()` the first time it is asked for.
    pub(crate) fn get_or_default<T: Any + Default + Send + Sync>(&self) -> Arc<T> {
        // A panic while holding the lock cannot leave the map half-changed (one insert), so a
        // poisoned lock still guards consistent data.
        let mut by_type = self
            .by_type
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let attached = by_type
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Arc::new(T::default()))
            .clone();
        match attached.downcast::<T>() {
            Ok(attached) => attached,
            Err(_) => unreachable!("every entry is stored under its own type's id"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_type_gets_one_shared_value() {
        let attachments = Attachments::default();
        let first = attachments.get_or_default::<Mutex<Vec<u8>>>();
        first.lock().unwrap().push(7);
        assert_eq!(
            *attachments
                .get_or_default::<Mutex<Vec<u8>>>()
                .lock()
                .unwrap(),
            [7]
        );
        assert_eq!(
            *attachments.get_or_default::<Mutex<u32>>().lock().unwrap(),
            0
        );
    }
}
