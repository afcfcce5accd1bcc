//! What the core asks its driver to do. The core never performs I/O: each input writes
//! effects into a caller-owned buffer, and the driver (runtime or simulator) carries them
//! out in order.

use super::message::{ClientId, Message, ReplicaIndex};

/// One thing for the driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Send `message` to replica `to`.
    Send {
        /// The receiving replica.
        to: ReplicaIndex,
        /// The message.
        message: Message,
    },
    /// Send `message` to every other replica (encode once, write to each).
    Broadcast {
        /// The message.
        message: Message,
    },
    /// Send `message` (a `Reply`) to `client`, if it is connected here.
    Reply {
        /// The client.
        client: ClientId,
        /// The reply.
        message: Message,
    },
}
