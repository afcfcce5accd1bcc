//! What a service computed off the event loop to restore a received snapshot
//! ([`StateMachine::prepare_restore`](super::StateMachine::prepare_restore)).
//!
//! The replica holds it without knowing what it is (the replica is generic over the
//! service, the driver's worker is not), and hands it back to the service that made it,
//! which takes its value out once.

use std::any::Any;
use std::fmt;
use std::sync::Mutex;

/// A service's prepared restore: any value, taken out once by the service that made it.
pub struct PreparedRestore {
    value: Mutex<Option<Box<dyn Any + Send>>>,
}

impl PreparedRestore {
    /// `value`, prepared.
    pub fn new<T: Any + Send>(value: T) -> PreparedRestore {
        PreparedRestore {
            value: Mutex::new(Some(Box::new(value))),
        }
    }

    /// The value, if it is a `T` and was not taken yet (then it is taken).
    pub fn take<T: Any>(&self) -> Option<T> {
        // A panic while the lock was held left the value as it was: still usable.
        let mut value = self
            .value
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if !value.as_ref().is_some_and(|value| value.is::<T>()) {
            return None;
        }
        let value = value.take().expect("checked above");
        Some(*value.downcast::<T>().expect("checked above"))
    }
}

impl fmt::Debug for PreparedRestore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PreparedRestore")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_taken_once_and_only_as_its_own_type() {
        let prepared = PreparedRestore::new(41_u64);
        assert_eq!(prepared.take::<u32>(), None, "another type");
        assert_eq!(prepared.take::<u64>(), Some(41));
        assert_eq!(prepared.take::<u64>(), None, "taken already");
    }
}
