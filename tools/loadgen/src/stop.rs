//! The stop flag: Ctrl-C (SIGINT) and SIGTERM set it; every loop that waits or drives load
//! polls it, so the run ends through the normal path and the local cluster's guards run.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

/// Installs the Ctrl-C handler (once per process).
pub fn install() -> anyhow::Result<()> {
    ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            // Second Ctrl-C: the user insists. The local replicas still die with us
            // (PR_SET_PDEATHSIG), so exiting here leaks nothing.
            std::process::exit(130);
        }
        eprintln!("vsr-load: stopping (Ctrl-C again to exit at once)");
    })?;
    Ok(())
}

/// Whether a stop was requested.
pub fn requested() -> bool {
    STOP.load(Ordering::Relaxed)
}
