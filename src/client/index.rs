//! The driver's session index by client id: which session a reply is for.
//!
//! Why not a hash map: the load generator looks up one session per reply, hundreds of
//! thousands a second, and the hash map's probe (control bytes, then the bucket) was a
//! visible share of its samples. The ids are our own, drawn at random, so the driver can
//! draw them to fit a table instead: a direct-mapped array of session indices, twice as
//! large as the number of sessions (rounded to a power of two), in which a session's slot
//! is the low bits of its id. A new session's id is redrawn until its slot is free, so no
//! two sessions share a slot and a lookup is one array read.
//!
//! What that costs the ids: with the table at most half full, an id is uniform over the
//! ids whose slot is free, at least half of all ids: under one bit of its 64 random bits.
//! A reply's id (anything a replica sent) only finds a candidate; the driver checks it
//! against the session's own id.

use crate::protocol::ClientId;

/// No session in this slot.
const EMPTY: u32 = u32::MAX;

/// Session indices by client id, one per slot; see the module comment.
#[derive(Debug)]
pub(crate) struct SessionIndex {
    slots: Vec<u32>,
    mask: u64,
}

impl SessionIndex {
    /// Room for `sessions` sessions (at most `u32::MAX - 1`), at most half full.
    pub(crate) fn new(sessions: usize) -> SessionIndex {
        assert!(sessions < EMPTY as usize, "too many sessions for the index");
        let size = sessions.saturating_mul(2).max(2).next_power_of_two();
        SessionIndex {
            slots: vec![EMPTY; size],
            mask: size as u64 - 1,
        }
    }

    fn slot(&self, client: ClientId) -> usize {
        (client & self.mask) as usize
    }

    /// Whether a session with id `client` may be added.
    pub(crate) fn is_free(&self, client: ClientId) -> bool {
        self.slots[self.slot(client)] == EMPTY
    }

    /// Adds session `index` under `client`, whose slot must be free.
    pub(crate) fn insert(&mut self, client: ClientId, index: usize) {
        let slot = self.slot(client);
        assert_eq!(self.slots[slot], EMPTY, "the slot of a new id is free");
        self.slots[slot] = u32::try_from(index).expect("checked in new");
    }

    /// Removes the session under `client`.
    pub(crate) fn remove(&mut self, client: ClientId) {
        let slot = self.slot(client);
        self.slots[slot] = EMPTY;
    }

    /// The session that may have id `client`: the caller compares the ids.
    pub(crate) fn candidate(&self, client: ClientId) -> Option<usize> {
        match self.slots[self.slot(client)] {
            EMPTY => None,
            index => Some(index as usize),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_in_free_slots_find_their_session() {
        let mut index = SessionIndex::new(3);
        assert_eq!(index.slots.len(), 8);
        index.insert(0x10, 0);
        index.insert(0x21, 1);
        assert!(!index.is_free(0x30), "slot 0 is taken");
        assert!(index.is_free(0x32));
        assert_eq!(index.candidate(0x21), Some(1));
        assert_eq!(index.candidate(0x31), Some(1), "a candidate, not a match");
        assert_eq!(index.candidate(0x12), None);
        index.remove(0x21);
        assert_eq!(index.candidate(0x21), None);
        assert!(index.is_free(0x31));
    }
}
