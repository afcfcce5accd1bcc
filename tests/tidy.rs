//! Tidy tests: architecture invariants that a grep can enforce.

use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Fails if code (comments aside) under `dir` mentions any of `forbidden`.
fn assert_code_avoids(dir: &str, forbidden: &[&str], why: &str) {
    let files = rust_files(&root().join(dir));
    assert!(!files.is_empty(), "no Rust files under {dir}");
    for file in files {
        let text = fs::read_to_string(&file).unwrap();
        // Comments may name what the code must not do.
        let code: String = text
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .collect();
        for word in forbidden {
            assert!(
                !code.contains(word),
                "{} mentions `{word}`: {why}",
                file.display()
            );
        }
    }
}

/// The protocol core is sans-IO: no sockets, clocks, threads or ambient randomness.
#[test]
fn protocol_core_touches_no_io_clock_thread_or_randomness() {
    let forbidden = [
        "mio",
        "std::net",
        "Instant",
        "SystemTime",
        "thread",
        "rand::",
        "std::fs",
        "std::env",
    ];
    assert_code_avoids(
        "src/protocol",
        &forbidden,
        "the protocol core must stay sans-IO",
    );
}

/// The simulator reads no clock and no ambient randomness, so a seed alone determines a
/// run.
#[test]
fn the_simulator_reads_no_clock_or_ambient_randomness() {
    let forbidden = [
        "Instant",
        "SystemTime",
        "RandomState",
        "rand::",
        "thread_rng",
        "getrandom",
        "std::thread",
    ];
    assert_code_avoids("src/sim", &forbidden, "a seed alone must determine a run");
}

/// No test is switched off: a test that cannot run is deleted or fixed.
#[test]
fn no_ignored_tests() {
    let mut files = rust_files(&root().join("src"));
    files.extend(rust_files(&root().join("tests")));
    files.extend(rust_files(&root().join("tools")));
    let marker = ["#[", "ignore]"].concat();
    for file in files {
        let text = fs::read_to_string(&file).unwrap();
        assert!(
            !text.contains(&marker),
            "{} has an ignored test",
            file.display()
        );
    }
}

/// Only the runtime and the client's I/O driver touch mio: everything they feed is sans-IO.
#[test]
fn only_the_runtime_and_the_client_driver_use_mio() {
    let allowed = [
        "src/runtime/",
        "src/client/driver.rs",
        "src/client/connection.rs",
    ];
    for file in rust_files(&root().join("src")) {
        let relative = file
            .strip_prefix(root())
            .unwrap()
            .to_string_lossy()
            .to_string();
        if allowed.iter().any(|prefix| relative.starts_with(prefix)) {
            continue;
        }
        let text = fs::read_to_string(&file).unwrap();
        assert!(!text.contains("mio::"), "{relative} uses mio");
    }
}
