//! The page keeper (`--durability disk`): a thread that writes the pages a checkpoint
//! fetch verified to the data directory's `fetch` file (`Effect::KeepPages`), so that a
//! replica killed mid-transfer resumes (`storage::fetch_file`).
//!
//! The pages are a cache outside the ordering rule: nothing waits for them, so they never
//! go through the storage thread, whose group commits they would delay, and are never
//! synced. The loop hands them over without blocking: when the queue is full they are
//! dropped (counted), and a write that fails is logged once and ends the keeping, never
//! the replica (a resumed fetch then fetches those pages again).

use crate::protocol::KeepPages;
use crate::storage::fetch_file::Writer;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::thread::JoinHandle;
use tracing::{debug, warn};

/// Requests queued for the thread, at most (each up to a message's worth of pages).
const QUEUED_MAX: usize = 64;

/// The loop's side of the page keeper thread.
#[derive(Debug)]
pub(super) struct PageKeeper {
    /// `None` once stopped.
    to_thread: Option<Sender<KeepPages>>,
    /// Pages not handed over (the queue was full, or the thread gone): logged.
    dropped: u64,
    thread: Option<JoinHandle<()>>,
}

impl PageKeeper {
    /// Starts the thread on `writer`.
    pub(super) fn spawn(writer: Writer) -> std::io::Result<PageKeeper> {
        let (to_thread, from_loop) = crossbeam_channel::bounded(QUEUED_MAX);
        let thread = std::thread::Builder::new()
            .name("vsr-page-keeper".into())
            .spawn(move || run(writer, &from_loop))?;
        Ok(PageKeeper {
            to_thread: Some(to_thread),
            dropped: 0,
            thread: Some(thread),
        })
    }

    /// Hands `keep` to the thread, or drops it when the thread is behind: the loop never
    /// waits for it. (A `Clear` dropped leaves the file as it is: the next transfer
    /// replaces it, and its pages are used only by digest.)
    pub(super) fn keep(&mut self, keep: KeepPages) {
        let Some(to_thread) = &self.to_thread else {
            return;
        };
        match to_thread.try_send(keep) {
            Ok(()) => {}
            Err(TrySendError::Full(keep) | TrySendError::Disconnected(keep)) => {
                if let KeepPages::Add { pages, .. } = keep {
                    if self.dropped == 0 {
                        warn!("the page keeper is behind: fetched pages not kept (a resumed fetch asks for them again)");
                    }
                    self.dropped += pages.len() as u64;
                }
            }
        }
    }

    /// Stops the thread once what is queued is written.
    pub(super) fn stop(&mut self) {
        if self.to_thread.take().is_some() && self.dropped > 0 {
            warn!(
                pages = self.dropped,
                "fetched pages not kept: the page keeper was behind"
            );
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for PageKeeper {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(mut writer: Writer, from_loop: &Receiver<KeepPages>) {
    while let Ok(keep) = from_loop.recv() {
        let result = match &keep {
            KeepPages::Add { root, pages } => writer.add(*root, pages),
            KeepPages::Clear => writer.clear(),
        };
        match result {
            Ok(()) if matches!(keep, KeepPages::Clear) => {
                debug!("kept pages of a finished checkpoint fetch removed");
            }
            Ok(()) => {}
            Err(error) => {
                // A cache: the replica goes on; a resumed fetch fetches these again.
                warn!(%error, "cannot keep fetched checkpoint pages; no more are kept");
                while from_loop.recv().is_ok() {}
                return;
            }
        }
    }
}
