//! The client side: sans-IO session logic ([`ClientSession`]) and its drivers.

pub mod session;

pub use session::{ClientSession, Outcome, SubmitError, Target};
