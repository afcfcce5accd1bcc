//! Where a run's files go. Paths the user gives (`--json`, `--hgrm`, `--csv`, `--svg`) are
//! used as given; everything else (the local processes' logs and data directories, the
//! sweep's CSV and SVG when not given) goes into the run directory: `--out-dir`, or by
//! default a new directory under the system temp dir, named and printed when first used,
//! never the current directory, so a run from a checkout writes nothing into the source
//! tree. Logs are removed after a run that went well unless `--keep-logs`; an emptied run
//! directory is removed with them.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The run directory's path and whether the user chose it.
struct RunDir {
    path: PathBuf,
    created: OnceLock<()>,
}

static RUN_DIR: OnceLock<RunDir> = OnceLock::new();

/// Sets the run directory: `out_dir`, or a fresh one under the system temp dir.
pub fn init(out_dir: Option<&Path>) {
    let path = out_dir.map_or_else(default_run_dir, Path::to_path_buf);
    let _ = RUN_DIR.set(RunDir {
        path,
        created: OnceLock::new(),
    });
}

/// `$TMPDIR/vsr-load-runs/run-<unix seconds>-<pid>`.
fn default_run_dir() -> PathBuf {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    std::env::temp_dir()
        .join("vsr-load-runs")
        .join(format!("run-{seconds}-{}", std::process::id()))
}

/// The run directory, created (and its path printed) on first use.
pub fn run_dir() -> anyhow::Result<&'static Path> {
    let dir = RUN_DIR.get_or_init(|| RunDir {
        path: default_run_dir(),
        created: OnceLock::new(),
    });
    // Created every time: an earlier target's clean-up may have removed it when emptied.
    std::fs::create_dir_all(&dir.path)
        .with_context(|| format!("creating the run directory {}", dir.path.display()))?;
    if dir.created.set(()).is_ok() {
        eprintln!("vsr-load: run directory {}", dir.path.display());
    }
    Ok(&dir.path)
}

/// `name` in the run directory.
pub fn in_run_dir(name: &str) -> anyhow::Result<PathBuf> {
    Ok(run_dir()?.join(name))
}

/// Removes the run directory if nothing is left in it (best effort).
pub fn remove_run_dir_if_empty() {
    if let Some(dir) = RUN_DIR.get() {
        if dir.created.get().is_some() {
            let _ = std::fs::remove_dir(&dir.path);
        }
    }
}

/// `out.json` with suffix `baseline` becomes `out.baseline.json`.
pub fn with_suffix(path: &Path, suffix: Option<&str>) -> PathBuf {
    let Some(suffix) = suffix else {
        return path.to_path_buf();
    };
    let stem = path
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    let name = match path.extension() {
        Some(ext) => format!("{stem}.{suffix}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{suffix}"),
    };
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_go_before_the_extension() {
        let path = Path::new("/tmp/out.json");
        assert_eq!(with_suffix(path, None), path);
        assert_eq!(
            with_suffix(path, Some("sessions-64")),
            Path::new("/tmp/out.sessions-64.json")
        );
        assert_eq!(
            with_suffix(Path::new("hist"), Some("baseline")),
            Path::new("hist.baseline")
        );
    }

    #[test]
    fn the_default_run_directory_is_outside_the_working_directory() {
        let dir = default_run_dir();
        assert!(dir.starts_with(std::env::temp_dir()), "{}", dir.display());
        assert!(dir.is_absolute());
    }
}
