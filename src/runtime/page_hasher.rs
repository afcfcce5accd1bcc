//! The page hasher: a thread that hashes the pages of the checkpoint parts this replica
//! fetches (paper 5.1), so that the event loop does not.
//!
//! Every fetched page is checked against the SHA-256 digest its verified manifest run
//! gave before the core uses it. Hashing on the loop was the largest cost of a receiver
//! in a full transfer (37% of its time, `perf/state_transfer.md`), and left the loop
//! unable to read the next answers meanwhile. The loop hands each part that holds pages
//! (after the wire's gate and the sender check) to this thread, which makes a `Page` of
//! each page (`HashedPart::hash`: the digest computed from the bytes), wakes the loop,
//! and the loop feeds the result to the core (`Replica::on_hashed_checkpoint_part`),
//! which compares each digest with its manifest's. The wire carries no page digest: what
//! the core compares was computed here, by trusted code, from the bytes it will use.
//!
//! Bounded: at most `PARTS_MAX` parts are with the thread at once (each pins the frame it
//! came in, at most `message_bytes_max`); beyond that a part goes to the core as it came
//! and is hashed there, as before this thread existed. A hashed part reaches the core
//! after messages read later from the same link: harmless, since the core matches an
//! answer to its request by responder and first page, and a page is taken whenever it
//! comes while its transfer is under way.

use crate::protocol::{Body, HashedPart, Message};
use crossbeam_channel::{Receiver, Sender};
use mio::Waker;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Parts with the thread, at most: twice the default window of requests in flight.
const PARTS_MAX: usize = 8;

/// The loop's side of the page hasher thread.
pub(super) struct PageHasher {
    /// `None` once stopped.
    to_thread: Option<Sender<Message>>,
    /// Each message handed over comes back once: hashed, or as it was if it was no
    /// checkpoint part of pages.
    from_thread: Receiver<Result<HashedPart, Message>>,
    /// Parts handed over and not taken back yet.
    in_flight: usize,
    thread: Option<JoinHandle<()>>,
}

impl PageHasher {
    /// Starts the thread; it wakes `waker` after every part.
    pub(super) fn spawn(replica: u8, waker: Arc<Waker>) -> std::io::Result<PageHasher> {
        let (to_thread, from_loop) = crossbeam_channel::bounded(PARTS_MAX);
        let (to_loop, from_thread) = crossbeam_channel::bounded(PARTS_MAX);
        let thread = std::thread::Builder::new()
            .name(format!("vsr-hasher-{replica}"))
            .spawn(move || run(&from_loop, &to_loop, &waker))?;
        Ok(PageHasher {
            to_thread: Some(to_thread),
            from_thread,
            in_flight: 0,
            thread: Some(thread),
        })
    }

    /// Hands `message`, a checkpoint part of pages, to the thread (`None`); gives it
    /// back (`Some`) when `PARTS_MAX` parts are with the thread, when the thread is gone
    /// or when it is another message: the caller then feeds it to the core as it is.
    pub(super) fn submit(&mut self, message: Message) -> Option<Message> {
        let Some(to_thread) = self.to_thread.as_ref() else {
            return Some(message);
        };
        if self.in_flight == PARTS_MAX || !is_pages(&message) {
            return Some(message);
        }
        // Never blocks: fewer than `PARTS_MAX` parts are in either channel.
        if let Err(error) = to_thread.try_send(message) {
            return Some(error.into_inner());
        }
        self.in_flight += 1;
        None
    }

    /// A part the thread hashed, if one is ready (or a message it gave back as it was).
    pub(super) fn take_hashed(&mut self) -> Option<Result<HashedPart, Message>> {
        let hashed = self.from_thread.try_recv().ok()?;
        self.in_flight -= 1;
        Some(hashed)
    }

    /// Stops the thread (parts not taken are dropped: the fetch asks again).
    pub(super) fn stop(&mut self) {
        // The thread never blocks on its way back: at most `PARTS_MAX` parts are in
        // either channel, so it ends once it has hashed what it was given.
        self.to_thread = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for PageHasher {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether `message` is a checkpoint part holding pages.
pub(super) fn is_pages(message: &Message) -> bool {
    matches!(
        &message.body,
        Body::CheckpointPart(part) if matches!(part.content, crate::protocol::CheckpointContent::Pages(_))
    )
}

fn run(
    from_loop: &Receiver<Message>,
    to_loop: &Sender<Result<HashedPart, Message>>,
    waker: &Waker,
) {
    while let Ok(message) = from_loop.recv() {
        let hashed = match message.body {
            Body::CheckpointPart(part) => HashedPart::hash(part).map_err(|part| Message {
                body: Body::CheckpointPart(part),
                ..message
            }),
            _ => Err(message),
        };
        if to_loop.send(hashed).is_err() {
            return;
        }
        let _ = waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{CheckpointContent, CheckpointPart};
    use crate::service::{Digest, DIGEST_BYTES};
    use bytes::Bytes;
    use mio::{Poll, Token};

    fn part(content: CheckpointContent) -> Message {
        Message {
            epoch: 0,
            view: 1,
            replica: 0,
            body: Body::CheckpointPart(CheckpointPart {
                op: 64,
                root: Digest([3; DIGEST_BYTES]),
                responder: 1,
                content,
            }),
        }
    }

    fn take(hasher: &mut PageHasher) -> HashedPart {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Some(hashed) = hasher.take_hashed() {
                return hashed.expect("a part of pages comes back hashed");
            }
            assert!(std::time::Instant::now() < deadline, "nothing came back");
            std::thread::yield_now();
        }
    }

    /// Pages come back with the digests of their bytes; other messages are not taken;
    /// past `PARTS_MAX` parts with the thread, parts are given back.
    #[test]
    fn hashes_pages_and_holds_a_bounded_number() {
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        let mut hasher = PageHasher::spawn(0, waker).unwrap();
        let pages = vec![
            (1, Bytes::from_static(b"one")),
            (5, Bytes::from_static(b"five")),
        ];
        assert!(hasher
            .submit(part(CheckpointContent::Pages(pages.clone())))
            .is_none());
        let hashed = take(&mut hasher);
        assert_eq!(hashed.pages.len(), 2);
        for ((index, bytes), (hashed_index, page)) in pages.iter().zip(&hashed.pages) {
            assert_eq!(index, hashed_index);
            assert_eq!(page.bytes(), bytes);
            assert_eq!(page.digest(), Digest::of(bytes));
        }
        let unavailable = part(CheckpointContent::Unavailable);
        assert_eq!(hasher.submit(unavailable.clone()), Some(unavailable));
        for _ in 0..PARTS_MAX {
            let pages = pages.clone();
            assert!(hasher
                .submit(part(CheckpointContent::Pages(pages)))
                .is_none());
        }
        let pages_again = pages.clone();
        assert!(hasher
            .submit(part(CheckpointContent::Pages(pages_again)))
            .is_some());
        for _ in 0..PARTS_MAX {
            take(&mut hasher);
        }
        assert!(hasher
            .submit(part(CheckpointContent::Pages(pages)))
            .is_none());
        hasher.stop();
    }
}
