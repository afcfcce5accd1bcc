//! Local clusters: child processes on free loopback ports, owned by a guard that stops them
//! on every way out (normal end, error, panic unwind, Ctrl-C through the stop flag). Each
//! child also gets PR_SET_PDEATHSIG, so even a SIGKILLed load generator leaves no replica
//! behind, and its own process group, so a terminal's Ctrl-C reaches only us and we stop
//! the children in order after reporting.

use crate::stop;
use anyhow::Context;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a child gets to exit after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);

/// Child processes that are stopped when this is dropped. Their directory (logs, and any
/// data directories under it) is removed then too, unless the logs are to be kept: asked
/// for, the run did not report success ([`ProcessGuard::succeeded`]), or a child exited
/// before it was stopped.
pub struct ProcessGuard {
    children: Vec<(String, Child, PathBuf)>,
    log_dir: PathBuf,
    keep_logs: bool,
    succeeded: bool,
    died: bool,
}

impl ProcessGuard {
    /// An empty guard whose children log (stdout and stderr) into files under `log_dir`;
    /// `keep_logs`: never remove them.
    pub fn new(log_dir: PathBuf, keep_logs: bool) -> anyhow::Result<ProcessGuard> {
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;
        Ok(ProcessGuard {
            children: Vec::new(),
            log_dir,
            keep_logs,
            succeeded: false,
            died: false,
        })
    }

    /// The run went well: the logs may go.
    pub fn succeeded(&mut self) {
        self.succeeded = true;
    }

    /// Starts `command` as a guarded child called `name`.
    pub fn spawn(&mut self, name: &str, mut command: Command) -> anyhow::Result<()> {
        let log_path = self.log_dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        // SAFETY: prctl and getppid are async-signal-safe; the closure allocates nothing
        // and touches no lock, as required between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {name}: {command:?}"))?;
        self.children.push((name.to_string(), child, log_path));
        Ok(())
    }

    /// An error if a child has exited: its name, status and the end of its log.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for (name, child, log_path) in &mut self.children {
            if let Some(status) = child.try_wait()? {
                anyhow::bail!(
                    "{name} exited ({status}); end of its log {}:\n{}",
                    log_path.display(),
                    strip_ansi(&log_tail(log_path))
                );
            }
        }
        Ok(())
    }

    /// Each child's name and the last line of its log (escape sequences removed).
    pub fn last_log_lines(&self) -> String {
        let mut out = String::new();
        for (name, _, log_path) in &self.children {
            let text = std::fs::read_to_string(log_path).unwrap_or_default();
            let last = text.lines().last().unwrap_or("(empty)");
            out += &format!("  {name}: {}\n", strip_ansi(last));
        }
        out
    }

    /// Where the children's logs are.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    fn stop_all(&mut self) {
        // Checked for all before stopping any: one child's end can end another (a baseline
        // primary exits when a backup goes), which is not a failure.
        self.died |= self
            .children
            .iter_mut()
            .any(|(_, child, _)| !matches!(child.try_wait(), Ok(None)));
        for (_, child, _) in &mut self.children {
            if matches!(child.try_wait(), Ok(None)) {
                // SAFETY: plain kill(2) on a pid we own and have not yet reaped.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            }
        }
        let deadline = Instant::now() + TERM_GRACE;
        for (_, child, _) in &mut self.children {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        self.stop_all();
        if self.keep_logs || !self.succeeded || self.died {
            eprintln!("vsr-load: logs kept in {}", self.log_dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.log_dir);
            crate::output::remove_run_dir_if_empty();
        }
    }
}

/// `text` without ANSI escape sequences (the replicas' logs are coloured).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC '[' parameters, ended by a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// `count` distinct free loopback ports (`ports`: checked, then released; a small race
/// with other programs remains, reported clearly if a child then fails to bind).
pub fn free_loopback_addresses(count: usize) -> anyhow::Result<Vec<SocketAddr>> {
    Ok(crate::ports::free_loopback_addresses(count)?)
}

/// Waits until `ready` succeeds, a child dies, the deadline passes or Ctrl-C.
pub fn wait_until_ready<T>(
    guard: &mut ProcessGuard,
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    while Instant::now() < deadline {
        anyhow::ensure!(!stop::requested(), "interrupted while waiting for {what}");
        guard.check_alive()?;
        match ready() {
            Ok(value) => return Ok(value),
            Err(error) => last_error = Some(error),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let why = last_error.map_or_else(String::new, |e| format!(": last error: {e:#}"));
    anyhow::bail!(
        "{what} not ready within {timeout:?}{why}; last log line of each process:\n{}(logs in {})",
        guard.last_log_lines(),
        guard.log_dir().display()
    )
}

/// The `vsr` binary: `--vsr-bin`, else next to this executable, else built with cargo from
/// the workspace this load generator was compiled in (same profile as ourselves).
pub fn locate_vsr_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        anyhow::ensure!(
            path.is_file(),
            "--vsr-bin {} does not exist",
            path.display()
        );
        return Ok(path.to_path_buf());
    }
    let exe = std::env::current_exe().context("finding this executable")?;
    let profile_dir = exe.parent().context("this executable has no directory")?;
    // Integration tests run us from target/<profile>/; deps/ never holds `vsr` itself.
    let profile_dir = if profile_dir.ends_with("deps") {
        profile_dir.parent().unwrap_or(profile_dir)
    } else {
        profile_dir
    };
    let candidate = profile_dir.join("vsr");
    if candidate.is_file() {
        return Ok(candidate);
    }
    build_vsr(profile_dir)?;
    anyhow::ensure!(
        candidate.is_file(),
        "built vsr but {} is still missing",
        candidate.display()
    );
    Ok(candidate)
}

fn build_vsr(profile_dir: &Path) -> anyhow::Result<()> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target_dir = profile_dir
        .parent()
        .context("no target directory above the executable")?;
    let release = profile_dir
        .file_name()
        .is_some_and(|name| name == "release");
    eprintln!(
        "vsr-load: no `vsr` binary next to {}; building it (cargo build{} -p vsr --bin vsr)",
        profile_dir.display(),
        if release { " --release" } else { "" }
    );
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command
        .current_dir(&workspace)
        .args(["build", "-p", "vsr", "--bin", "vsr", "--target-dir"])
        .arg(target_dir);
    if release {
        command.arg("--release");
    }
    let status = command
        .status()
        .context("running cargo to build vsr (or pass --vsr-bin)")?;
    anyhow::ensure!(
        status.success(),
        "building vsr failed ({status}); pass --vsr-bin PATH"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_colours_are_stripped() {
        let line = "\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m replica 1 recovering";
        assert_eq!(strip_ansi(line), "2026  INFO replica 1 recovering");
    }
}
