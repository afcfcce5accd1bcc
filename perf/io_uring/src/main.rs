//! Group commit two ways, on a real file: vsr's storage thread against io_uring driven
//! from the event loop (perf/io_uring.md).
//!
//! A "loop" thread stands for the replica's event loop: every iteration it waits for
//! events (`mio::Poll`), takes completions, makes at most one batch of `--batch-bytes`
//! (the writes of one iteration, padded to 4 KiB blocks as the journal pads them) and
//! hands it over. A batch is durable when it is written and an `fdatasync` that started
//! after the write finished has returned, and the loop learns it only in order (the
//! replica's `on_persisted(id)` covers every write up to `id`).
//!
//! - `thread` (variant A, what `src/runtime/storage_thread.rs` does): the loop sends the
//!   batch over a bounded crossbeam channel; the storage thread takes every batch queued,
//!   copies them into one buffer (as `DataDir::append_owned` encodes a group), does one
//!   `write_all_at` and one `sync_data`, sends the last batch number back and wakes the
//!   loop with a `mio::Waker`. One group in flight at a time.
//! - `uring` (variant B): the loop itself copies the batches pending into a group buffer
//!   and pushes a linked WRITE -> FSYNC(DATASYNC) pair (`IOSQE_IO_LINK`: the sync starts
//!   only after the write completed) with a non-blocking `io_uring_enter`; it waits for
//!   completions in the same `mio::Poll` (the ring's fd is pollable) and reaps the CQ
//!   itself. Up to `--depth` groups in flight; a group counts as durable only when its own
//!   sync and those of every earlier group have completed (a sync cannot cover a write
//!   in another chain that had not finished when it started).
//! - `inline` (reference only): the loop writes and syncs each batch itself, blocking.
//!
//! The file is grown with written zeros and synced first, as `DataDir::grow` does, so
//! every `fdatasync` flushes data only; groups are written one after the other and wrap
//! to the start at the end of the file (the blocks stay allocated).
//!
//! `UB_TRACE=1` prints, on stderr, how many batches each completion made durable.
//!
//! Output: one CSV line (see `HEADER`) for the measured window, which starts after a
//! warm-up; CPU is `getrusage(RUSAGE_SELF)`, which counts every thread of the process,
//! the storage thread and io_uring's kernel workers (`iou-wrk-*`) included.

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use hdrhistogram::Histogram;
use io_uring::{opcode, squeue, types, IoUring};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

const HEADER: &str = "variant,depth,wait,mode,batch_bytes,rate,inflight,seconds,groups,batches,bytes,groups_per_s,batches_per_s,mb_per_s,batches_per_group,p50_us,p99_us,max_us,cpu_us_per_batch,vcsw_per_batch,ivcsw_per_batch,late,lag_p50_us,lag_p99_us,sync_p50_us,sync_p99_us,load1,threads";

const WAKER: Token = Token(0);
const RING: Token = Token(1);
const TIMER: Token = Token(2);
const BLOCK_BYTES: usize = 4096;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Variant {
    Thread,
    Uring,
    Inline,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Wait {
    /// The loop blocks in `epoll_wait` (mio), as the replica's loop must for its sockets.
    Epoll,
    /// The loop blocks in `io_uring_enter(GETEVENTS)`: a loop with nothing but the ring.
    Ring,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    /// A new batch every iteration while fewer than `inflight` are not yet durable.
    Closed,
    /// A new batch every 1/`rate` s (open loop), `inflight` still bounding what waits.
    Rate,
}

#[derive(Debug)]
struct Args {
    variant: Variant,
    depth: usize,
    wait: Wait,
    mode: Mode,
    batch_bytes: usize,
    rate: u64,
    inflight: u64,
    seconds: f64,
    warmup: f64,
    path: String,
    file_mib: u64,
    header: bool,
    coop: bool,
    probe: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        variant: Variant::Thread,
        depth: 1,
        wait: Wait::Epoll,
        mode: Mode::Closed,
        batch_bytes: 4096,
        rate: 1000,
        inflight: 64,
        seconds: 3.0,
        warmup: 0.5,
        path: "/tmp/uring-bench/journal".into(),
        file_mib: 64,
        header: false,
        coop: false,
        probe: false,
    };
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < raw.len() {
        let flag = raw[i].as_str();
        if flag == "--header" || flag == "--coop" || flag == "--probe" {
            args.header |= flag == "--header";
            args.probe |= flag == "--probe";
            args.coop |= flag == "--coop";
            i += 1;
            continue;
        }
        let value = raw.get(i + 1).unwrap_or_else(|| usage(flag)).as_str();
        match flag {
            "--variant" => {
                args.variant = match value {
                    "thread" => Variant::Thread,
                    "uring" => Variant::Uring,
                    "inline" => Variant::Inline,
                    _ => usage(flag),
                }
            }
            "--depth" => args.depth = value.parse().unwrap_or_else(|_| usage(flag)),
            "--wait" => {
                args.wait = match value {
                    "epoll" => Wait::Epoll,
                    "ring" => Wait::Ring,
                    _ => usage(flag),
                }
            }
            "--mode" => {
                args.mode = match value {
                    "closed" => Mode::Closed,
                    "rate" => Mode::Rate,
                    _ => usage(flag),
                }
            }
            "--batch-bytes" => args.batch_bytes = value.parse().unwrap_or_else(|_| usage(flag)),
            "--rate" => args.rate = value.parse().unwrap_or_else(|_| usage(flag)),
            "--inflight" => args.inflight = value.parse().unwrap_or_else(|_| usage(flag)),
            "--seconds" => args.seconds = value.parse().unwrap_or_else(|_| usage(flag)),
            "--warmup" => args.warmup = value.parse().unwrap_or_else(|_| usage(flag)),
            "--path" => args.path = value.into(),
            "--file-mib" => args.file_mib = value.parse().unwrap_or_else(|_| usage(flag)),
            _ => usage(flag),
        }
        i += 2;
    }
    assert!(
        args.batch_bytes > 0 && args.batch_bytes.is_multiple_of(BLOCK_BYTES),
        "--batch-bytes: a positive multiple of 4096"
    );
    assert!((1..=64).contains(&args.depth), "--depth: 1..=64");
    assert!((1..=4096).contains(&args.inflight), "--inflight: 1..=4096");
    assert!(
        args.seconds > 0.0 && args.seconds <= 30.0,
        "--seconds: bounded, at most 30"
    );
    assert!(args.rate > 0 && args.rate <= 1_000_000);
    let group_bytes_max = args.inflight * args.batch_bytes as u64;
    assert!(
        group_bytes_max <= args.file_mib << 20,
        "--file-mib must hold --inflight batches"
    );
    args
}

fn usage(flag: &str) -> ! {
    eprintln!(
        "bad or missing value for {flag}\nusage: uring-bench --variant thread|uring|inline [--depth N] [--wait epoll|ring] \
         [--mode closed|rate] [--batch-bytes B] [--rate PER_S] [--inflight N] [--seconds S] [--warmup S] \
         [--path FILE] [--file-mib M] [--coop] [--header] [--probe]"
    );
    std::process::exit(2);
}

/// The journal stand-in: grown with zeros, synced, then overwritten group after group.
struct Journal {
    file: File,
    file_bytes: u64,
    /// Where the next group goes.
    offset: u64,
}

impl Journal {
    fn create(path: &str, file_bytes: u64) -> Journal {
        if let Some(parent) = std::path::Path::new(path).parent() {
            std::fs::create_dir_all(parent).expect("create the benchmark directory");
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .expect("open the journal file");
        let zeros = vec![0u8; 1 << 20];
        let mut at = 0;
        while at < file_bytes {
            file.write_all_at(&zeros, at)
                .expect("grow the journal with zeros");
            at += zeros.len() as u64;
        }
        file.sync_all().expect("fsync the grown journal");
        Journal {
            file,
            file_bytes,
            offset: 0,
        }
    }

    /// The offset for a group of `length` bytes: the next one, or the start of the file
    /// when it would not fit before the end.
    fn place(&mut self, length: usize) -> u64 {
        if self.offset + length as u64 > self.file_bytes {
            self.offset = 0;
        }
        let at = self.offset;
        self.offset += length as u64;
        at
    }
}

/// One batch handed over: its number and its bytes.
struct Batch {
    seq: u64,
    bytes: Vec<u8>,
}

/// What the loop measures, over the window only.
struct Meter {
    window_start: Instant,
    window_end: Instant,
    /// When each batch not yet durable was handed over, by `seq % len`.
    handed_over: Vec<Instant>,
    latency_us: Histogram<u64>,
    /// Rate mode: how late the loop handed each batch over, after it was due (a loop
    /// blocked in a sync, or waiting to be scheduled or for its timer, falls behind).
    lag_us: Histogram<u64>,
    /// Per group, how long its write and sync took where the variant can see it: in the
    /// storage thread around `write_all_at` + `sync_data` (thread), around the same calls
    /// (inline), or from `io_uring_enter` to the loop reaping the sync (uring, so this
    /// includes the wake-up). Latency minus this is the hand-off and the queueing.
    sync_us: Histogram<u64>,
    groups: u64,
    batches: u64,
    bytes: u64,
    /// Rate mode: iterations in which a due batch waited for the in-flight bound.
    late: u64,
    usage_start: Option<libc::rusage>,
    usage_end: Option<libc::rusage>,
    threads_seen: String,
    /// `UB_TRACE` set: print how many batches each completion made durable (stderr).
    trace: bool,
}

impl Meter {
    fn new(args: &Args) -> Meter {
        let start = Instant::now();
        let window_start = start + Duration::from_secs_f64(args.warmup);
        Meter {
            window_start,
            window_end: window_start + Duration::from_secs_f64(args.seconds),
            handed_over: vec![start; args.inflight as usize],
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap(),
            lag_us: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap(),
            sync_us: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap(),
            groups: 0,
            batches: 0,
            bytes: 0,
            late: 0,
            usage_start: None,
            usage_end: None,
            threads_seen: String::new(),
            trace: std::env::var_os("UB_TRACE").is_some(),
        }
    }

    /// Batch `seq` is handed over `now`; in rate mode it was `due` then.
    fn hand_over(&mut self, seq: u64, now: Instant, due: Option<Instant>) {
        if let Some(due) = due {
            if self.in_window(now) {
                self.lag_us
                    .saturating_record((now - due.min(now)).as_micros() as u64);
            }
        }
        let slots = self.handed_over.len() as u64;
        self.handed_over[(seq % slots) as usize] = now;
    }

    fn in_window(&self, now: Instant) -> bool {
        now >= self.window_start && now < self.window_end
    }

    /// Batches `from..to` became durable (one group, or several completed at once).
    fn durable(&mut self, from: u64, to: u64, groups: u64, batch_bytes: usize, now: Instant) {
        if self.trace && self.in_window(now) {
            eprint!("{} ", to - from);
        }
        if !self.in_window(now) {
            return;
        }
        let slots = self.handed_over.len() as u64;
        for seq in from..to {
            let waited = now - self.handed_over[(seq % slots) as usize];
            self.latency_us
                .saturating_record(waited.as_micros().max(1) as u64);
        }
        self.groups += groups;
        self.batches += to - from;
        self.bytes += (to - from) * batch_bytes as u64;
    }

    /// A group's write and sync took `took` (see `sync_us`).
    fn synced(&mut self, took: Duration, now: Instant) {
        if self.in_window(now) {
            self.sync_us
                .saturating_record(took.as_micros().max(1) as u64);
        }
    }

    /// Takes the CPU snapshots at the window's edges.
    fn tick(&mut self, now: Instant) {
        if self.usage_start.is_none() && now >= self.window_start {
            self.usage_start = Some(rusage());
        }
        if self.usage_end.is_none() && now >= self.window_end {
            self.usage_end = Some(rusage());
            self.threads_seen = thread_names();
        }
    }
}

fn rusage() -> libc::rusage {
    // SAFETY: getrusage writes a whole `rusage` into the zeroed value it is given.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage
    }
}

fn cpu_us(usage: &libc::rusage) -> f64 {
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// This process's threads by name, e.g. `main+iou-wrk-123x2`, io_uring's workers
/// collapsed into one name.
fn thread_names() -> String {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .filter_map(|task| task.ok())
                .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
                .map(|name| {
                    let name = name.trim().to_string();
                    if name.starts_with("iou-wrk") {
                        "iou-wrk".into()
                    } else {
                        name
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < names.len() {
        let run = names[i..]
            .iter()
            .take_while(|name| **name == names[i])
            .count();
        out.push(if run > 1 {
            format!("{}x{}", names[i], run)
        } else {
            names[i].clone()
        });
        i += run;
    }
    out.join("+")
}

/// Fills a batch as the loop's iteration would have: the journal's bytes for it.
fn fill(bytes: &mut Vec<u8>, seq: u64, batch_bytes: usize) {
    bytes.clear();
    bytes.resize(batch_bytes, (seq % 251) as u8 + 1);
    bytes[..8].copy_from_slice(&seq.to_le_bytes());
}

/// The loop's schedule: whether to make a batch now, and how long it may sleep.
struct Schedule {
    mode: Mode,
    period: Duration,
    next_due: Instant,
    /// Rate mode: when the batch last granted by `due` was due.
    granted_due: Instant,
    inflight: u64,
    /// Rate mode: a periodic timerfd, one expiry per batch, for loops that wait in
    /// `epoll_wait` (whose timeout counts whole milliseconds: mio rounds 0.5 ms up to 1).
    ticker: Option<std::os::fd::OwnedFd>,
    /// Whether the loop waits on `ticker` (else it sleeps until `next_due` itself).
    ticking: bool,
}

impl Schedule {
    /// Whether a batch is due now with `waiting` not yet durable; counts a late one.
    fn due(&mut self, now: Instant, waiting: u64, meter: &mut Meter) -> bool {
        let room = waiting < self.inflight;
        match self.mode {
            Mode::Closed => room,
            Mode::Rate => {
                if now < self.next_due {
                    return false;
                }
                if !room {
                    if meter.in_window(now) {
                        meter.late += 1;
                    }
                    return false;
                }
                self.granted_due = self.next_due;
                self.next_due += self.period;
                true
            }
        }
    }

    /// Rate mode: when the batch just granted was due (its lag is measured from then).
    fn granted_due(&self) -> Option<Instant> {
        (self.mode == Mode::Rate).then_some(self.granted_due)
    }

    /// How long the loop may block: not at all if it could make a batch now, until the
    /// next batch is due in rate mode, else until a completion.
    fn timeout(&self, now: Instant, waiting: u64, producing: bool) -> Option<Duration> {
        if !producing {
            return Some(Duration::from_millis(20)); // Draining: completions will come.
        }
        match self.mode {
            Mode::Closed if waiting < self.inflight => Some(Duration::ZERO),
            Mode::Closed => None,
            Mode::Rate if waiting >= self.inflight => None,
            Mode::Rate if now >= self.next_due => Some(Duration::ZERO),
            Mode::Rate if self.ticking => None,
            Mode::Rate => Some(self.next_due - now),
        }
    }
}

fn main() {
    let args = parse_args();
    if args.header {
        println!("{HEADER}");
        return;
    }
    if args.probe {
        probe();
        return;
    }
    let journal = Journal::create(&args.path, args.file_mib << 20);
    let period = Duration::from_secs_f64(1.0 / args.rate as f64);
    // The schedule starts just before the ticker: each expiry comes at or just after the
    // batch it stands for is due.
    let mut meter = Meter::new(&args);
    let first_due = Instant::now();
    let mut schedule = Schedule {
        mode: args.mode,
        period,
        next_due: first_due,
        granted_due: first_due,
        inflight: args.inflight,
        ticker: (args.mode == Mode::Rate).then(|| ticker(period)),
        ticking: false,
    };
    match args.variant {
        Variant::Thread => run_thread(&args, journal, &mut meter, &mut schedule),
        Variant::Uring => run_uring(&args, journal, &mut meter, &mut schedule),
        Variant::Inline => run_inline(&args, journal, &mut meter, &mut schedule),
    }
    report(&args, &meter);
    let _ = std::fs::remove_file(&args.path);
}

/// Whether io_uring works here: `io_uring_setup`, and the opcodes the benchmark uses.
fn probe() {
    match IoUring::new(8) {
        Err(error) => println!(
            "io_uring_setup: FAILED: {error} (errno {:?})",
            error.raw_os_error()
        ),
        Ok(ring) => {
            let mut probe = io_uring::Probe::new();
            let registered = ring.submitter().register_probe(&mut probe);
            println!(
                "io_uring_setup: ok (FEAT_NODROP {}, FEAT_EXT_ARG {}); IORING_REGISTER_PROBE: {}; WRITE: {}; FSYNC: {}",
                ring.params().is_feature_nodrop(),
                ring.params().is_feature_ext_arg(),
                if registered.is_ok() { "ok" } else { "failed" },
                probe.is_supported(opcode::Write::CODE),
                probe.is_supported(opcode::Fsync::CODE),
            );
        }
    }
}

fn report(args: &Args, meter: &Meter) {
    let (start, end) = (
        meter.usage_start.expect("window start"),
        meter.usage_end.expect("window end"),
    );
    let batches = meter.batches.max(1) as f64;
    let seconds = args.seconds;
    let load1 = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_default();
    let variant = format!("{:?}", args.variant).to_lowercase();
    let wait = format!("{:?}{}", args.wait, if args.coop { "-coop" } else { "" }).to_lowercase();
    let mode = format!("{:?}", args.mode).to_lowercase();
    println!(
        "{variant},{},{wait},{mode},{},{},{},{seconds},{},{},{},{:.0},{:.0},{:.1},{:.2},{},{},{},{:.1},{:.2},{:.2},{},{},{},{},{},{load1},{}",
        args.depth,
        args.batch_bytes,
        if args.mode == Mode::Rate { args.rate } else { 0 },
        args.inflight,
        meter.groups,
        meter.batches,
        meter.bytes,
        meter.groups as f64 / seconds,
        meter.batches as f64 / seconds,
        meter.bytes as f64 / seconds / 1e6,
        meter.batches as f64 / meter.groups.max(1) as f64,
        meter.latency_us.value_at_quantile(0.50),
        meter.latency_us.value_at_quantile(0.99),
        meter.latency_us.max(),
        (cpu_us(&end) - cpu_us(&start)) / batches,
        (end.ru_nvcsw - start.ru_nvcsw) as f64 / batches,
        (end.ru_nivcsw - start.ru_nivcsw) as f64 / batches,
        meter.late,
        meter.lag_us.value_at_quantile(0.50),
        meter.lag_us.value_at_quantile(0.99),
        meter.sync_us.value_at_quantile(0.50),
        meter.sync_us.value_at_quantile(0.99),
        meter.threads_seen,
    );
}

/// A periodic timer of `period`, non-blocking, first expiry one period from now.
fn ticker(period: Duration) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    let every = libc::timespec {
        tv_sec: period.as_secs() as _,
        tv_nsec: period.subsec_nanos() as _,
    };
    let spec = libc::itimerspec {
        it_interval: every,
        it_value: every,
    };
    // SAFETY: plain system calls on a descriptor this function creates and then owns.
    unsafe {
        let fd = libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        );
        assert!(fd >= 0, "timerfd_create");
        assert_eq!(
            libc::timerfd_settime(fd, 0, &spec, std::ptr::null_mut()),
            0,
            "timerfd_settime"
        );
        std::os::fd::OwnedFd::from_raw_fd(fd)
    }
}

impl Schedule {
    /// Makes `poll` wake the loop on every tick (rate mode).
    fn tick_through(&mut self, poll: &Poll) {
        if let Some(ticker) = &self.ticker {
            poll.registry()
                .register(
                    &mut SourceFd(&ticker.as_raw_fd()),
                    TIMER,
                    Interest::READABLE,
                )
                .expect("register the ticker");
            self.ticking = true;
        }
    }

    /// Resets the ticker's readiness after it woke the loop (epoll is edge-triggered).
    fn drain_ticker(&self, events: &Events) {
        if let Some(ticker) = &self.ticker {
            if events.iter().any(|event| event.token() == TIMER) {
                let mut expiries = [0u8; 8];
                // SAFETY: reads 8 bytes into an 8-byte buffer; EAGAIN is fine.
                unsafe { libc::read(ticker.as_raw_fd(), expiries.as_mut_ptr().cast(), 8) };
            }
        }
    }
}

/// Polls, retrying an interrupted wait (io_uring's task work may interrupt it).
fn poll_once(poll: &mut Poll, events: &mut Events, timeout: Option<Duration>, schedule: &Schedule) {
    loop {
        match poll.poll(events, timeout) {
            Ok(()) => break,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => panic!("poll: {error}"),
        }
    }
    schedule.drain_ticker(events);
}

// ---------------------------------------------------------------- A: the storage thread

/// The storage thread's report: batches up to `last` (exclusive) are durable.
struct Completion {
    durable_to: u64,
    /// How long the group's write and sync took, in the thread.
    took: Duration,
}

fn run_thread(args: &Args, journal: Journal, meter: &mut Meter, schedule: &mut Schedule) {
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(64);
    let waker = Arc::new(Waker::new(poll.registry(), WAKER).expect("waker"));
    schedule.tick_through(&poll);
    let capacity = args.inflight as usize;
    let (batches, to_thread) = crossbeam_channel::bounded::<Batch>(capacity);
    let (from_thread, completions) = crossbeam_channel::bounded::<Completion>(capacity + 2);
    // As many spares as batches can be in flight, so the steady state allocates nothing.
    let (spare_sender, spares) = crossbeam_channel::bounded::<Vec<u8>>(capacity);
    let thread = {
        let waker = waker.clone();
        let group_bytes_max = capacity * args.batch_bytes;
        std::thread::Builder::new()
            .name("storage".into())
            .spawn(move || {
                storage_thread(
                    journal,
                    to_thread,
                    from_thread,
                    spare_sender,
                    waker,
                    group_bytes_max,
                )
            })
            .expect("spawn the storage thread")
    };
    let (mut next_seq, mut durable_to) = (0u64, 0u64);
    loop {
        let now = Instant::now();
        meter.tick(now);
        // Completions (the storage phase).
        loop {
            match completions.try_recv() {
                Ok(done) => {
                    meter.synced(done.took, now);
                    meter.durable(durable_to, done.durable_to, 1, args.batch_bytes, now);
                    durable_to = done.durable_to;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => panic!("the storage thread is gone"),
            }
        }
        let producing = now < meter.window_end;
        if !producing && durable_to == next_seq {
            break;
        }
        // One batch, handed over at the end of the iteration.
        if producing && schedule.due(now, next_seq - durable_to, meter) {
            let mut bytes = spares
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(args.batch_bytes));
            fill(&mut bytes, next_seq, args.batch_bytes);
            meter.hand_over(next_seq, Instant::now(), schedule.granted_due());
            // Never full: at most `inflight` batches are not yet durable.
            batches
                .try_send(Batch {
                    seq: next_seq,
                    bytes,
                })
                .expect("the batch queue has room");
            next_seq += 1;
        }
        let timeout = schedule.timeout(Instant::now(), next_seq - durable_to, producing);
        poll_once(&mut poll, &mut events, timeout, schedule);
    }
    drop(batches);
    thread.join().expect("the storage thread panicked");
}

fn storage_thread(
    mut journal: Journal,
    batches: Receiver<Batch>,
    completions: Sender<Completion>,
    spares: Sender<Vec<u8>>,
    waker: Arc<Waker>,
    group_bytes_max: usize,
) {
    let mut buffer: Vec<u8> = Vec::with_capacity(group_bytes_max);
    while let Ok(first) = batches.recv() {
        buffer.clear();
        let mut last = first.seq;
        buffer.extend_from_slice(&first.bytes);
        let _ = spares.try_send(first.bytes);
        while let Ok(next) = batches.try_recv() {
            assert_eq!(next.seq, last + 1);
            last = next.seq;
            buffer.extend_from_slice(&next.bytes);
            let _ = spares.try_send(next.bytes);
        }
        let at = journal.place(buffer.len());
        let started = Instant::now();
        journal.file.write_all_at(&buffer, at).expect("write");
        journal.file.sync_data().expect("fdatasync");
        let took = started.elapsed();
        if completions
            .send(Completion {
                durable_to: last + 1,
                took,
            })
            .is_err()
        {
            return;
        }
        let _ = waker.wake();
    }
}

// ---------------------------------------------------------------- B: io_uring in the loop

/// A group submitted to the ring: batches `from..to` in buffer `buffer`.
struct Group {
    from: u64,
    to: u64,
    buffer: usize,
    synced: bool,
    submitted: Instant,
}

fn run_uring(args: &Args, mut journal: Journal, meter: &mut Meter, schedule: &mut Schedule) {
    let entries = (2 * args.depth as u32).next_power_of_two().max(8);
    let mut builder = IoUring::builder();
    if args.coop {
        // The kernel does not interrupt the loop to post completions: they wait for its
        // next system call (the loop makes one every iteration).
        builder.setup_coop_taskrun().setup_single_issuer();
    }
    let mut ring: IoUring = builder.build(entries).expect("io_uring_setup");
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(64);
    let ring_fd = ring.as_raw_fd();
    if args.wait == Wait::Epoll {
        poll.registry()
            .register(&mut SourceFd(&ring_fd), RING, Interest::READABLE)
            .expect("register the ring with epoll");
        schedule.tick_through(&poll);
    }
    let fd = types::Fd(journal.file.as_raw_fd());
    let group_bytes_max = args.inflight as usize * args.batch_bytes;
    // One buffer per group in flight; a buffer is reused only after its group's
    // completions are reaped, so the kernel never reads a buffer being refilled.
    let mut buffers: Vec<Vec<u8>> = (0..args.depth)
        .map(|_| Vec::with_capacity(group_bytes_max))
        .collect();
    let mut free_buffers: Vec<usize> = (0..args.depth).collect();
    let mut in_flight: VecDeque<Group> = VecDeque::with_capacity(args.depth);
    let mut pending: Vec<Vec<u8>> = Vec::with_capacity(args.inflight as usize);
    let mut batch_pool: Vec<Vec<u8>> = (0..args.inflight)
        .map(|_| Vec::with_capacity(args.batch_bytes))
        .collect();
    let (mut next_seq, mut durable_to, mut submitted_to) = (0u64, 0u64, 0u64);
    loop {
        let now = Instant::now();
        meter.tick(now);
        // Completions: reap the CQ, then advance the durable prefix.
        for cqe in ring.completion() {
            let slot = (cqe.user_data() >> 1) as usize;
            let is_sync = cqe.user_data() & 1 == 1;
            let group = in_flight
                .iter_mut()
                .find(|g| g.buffer == slot)
                .expect("a group in flight");
            if is_sync {
                assert_eq!(cqe.result(), 0, "fdatasync failed: {}", cqe.result());
                group.synced = true;
                let took = now.saturating_duration_since(group.submitted);
                meter.synced(took, now);
            } else {
                let expected = ((group.to - group.from) as usize * args.batch_bytes) as i32;
                assert_eq!(
                    cqe.result(),
                    expected,
                    "write failed or short: {}",
                    cqe.result()
                );
            }
        }
        let (durable_before, mut groups_done) = (durable_to, 0);
        while in_flight.front().is_some_and(|g| g.synced) {
            let group = in_flight.pop_front().unwrap();
            assert_eq!(group.from, durable_to);
            free_buffers.push(group.buffer);
            durable_to = group.to;
            groups_done += 1;
        }
        if groups_done > 0 {
            meter.durable(
                durable_before,
                durable_to,
                groups_done,
                args.batch_bytes,
                now,
            );
        }
        let producing = now < meter.window_end;
        if !producing && durable_to == next_seq {
            break;
        }
        if producing && schedule.due(now, next_seq - durable_to, meter) {
            let mut bytes = batch_pool.pop().expect("a batch buffer");
            fill(&mut bytes, next_seq, args.batch_bytes);
            meter.hand_over(next_seq, Instant::now(), schedule.granted_due());
            pending.push(bytes);
            next_seq += 1;
        }
        // Hand over: everything pending as one group, if a group slot is free.
        if !pending.is_empty() {
            if let Some(slot) = free_buffers.pop() {
                let buffer = &mut buffers[slot];
                buffer.clear();
                for bytes in pending.drain(..) {
                    buffer.extend_from_slice(&bytes);
                    batch_pool.push(bytes);
                }
                let at = journal.place(buffer.len());
                let write = opcode::Write::new(fd, buffer.as_ptr(), buffer.len() as u32)
                    .offset(at)
                    .build()
                    .flags(squeue::Flags::IO_LINK)
                    .user_data((slot as u64) << 1);
                let sync = opcode::Fsync::new(fd)
                    .flags(types::FsyncFlags::DATASYNC)
                    .build()
                    .user_data(((slot as u64) << 1) | 1);
                // SAFETY: the buffer stays allocated and untouched until both completions
                // of its group are reaped (it returns to `free_buffers` only then), and the
                // file outlives the ring's use of it (the loop drains before returning).
                unsafe {
                    let mut sq = ring.submission();
                    sq.push(&write).expect("room in the SQ");
                    sq.push(&sync).expect("room in the SQ");
                }
                in_flight.push_back(Group {
                    from: submitted_to,
                    to: next_seq,
                    buffer: slot,
                    synced: false,
                    submitted: Instant::now(),
                });
                submitted_to = next_seq;
                ring.submit().expect("io_uring_enter");
            }
        }
        let timeout = schedule.timeout(Instant::now(), next_seq - durable_to, producing);
        match args.wait {
            Wait::Epoll => poll_once(&mut poll, &mut events, timeout, schedule),
            Wait::Ring => wait_ring(&ring, timeout),
        }
    }
}

/// Blocks in `io_uring_enter` until a completion or `timeout`.
fn wait_ring(ring: &IoUring, timeout: Option<Duration>) {
    let result = match timeout {
        Some(timeout) if timeout.is_zero() => return,
        Some(timeout) => {
            let timespec = types::Timespec::from(timeout);
            let args = types::SubmitArgs::new().timespec(&timespec);
            ring.submitter().submit_with_args(1, &args)
        }
        None => ring.submit_and_wait(1),
    };
    match result {
        Ok(_) => {}
        Err(error) if matches!(error.raw_os_error(), Some(libc::ETIME) | Some(libc::EINTR)) => {}
        Err(error) => panic!("io_uring_enter: {error}"),
    }
}

// ---------------------------------------------------------------- reference: inline

/// The loop writes and syncs each batch itself: what the issue forbids (the loop stalls
/// for the whole disk latency), kept as the floor for latency.
fn run_inline(args: &Args, mut journal: Journal, meter: &mut Meter, schedule: &mut Schedule) {
    let mut poll = Poll::new().expect("poll");
    schedule.tick_through(&poll);
    let mut events = Events::with_capacity(64);
    let mut bytes = Vec::with_capacity(args.batch_bytes);
    let mut next_seq = 0u64;
    loop {
        let now = Instant::now();
        meter.tick(now);
        if now >= meter.window_end {
            break;
        }
        if schedule.due(now, 0, meter) {
            fill(&mut bytes, next_seq, args.batch_bytes);
            meter.hand_over(next_seq, Instant::now(), schedule.granted_due());
            let at = journal.place(bytes.len());
            let started = Instant::now();
            journal.file.write_all_at(&bytes, at).expect("write");
            journal.file.sync_data().expect("fdatasync");
            let now = Instant::now();
            meter.synced(now - started, now);
            meter.durable(next_seq, next_seq + 1, 1, args.batch_bytes, now);
            next_seq += 1;
        }
        let timeout = schedule.timeout(Instant::now(), 0, true);
        poll_once(&mut poll, &mut events, timeout, schedule);
    }
}
