//! hatchery and a peer timed alternately, batch by batch, in one process:
//! whatever the machine does meanwhile (another process, a frequency
//! change, a noisy neighbour on a VM) falls on both sides alike, so their
//! ratio holds where their times do not.
//!
//! ```text
//! cargo bench --bench alternate                 # every pair, 5 runs each
//! cargo bench --bench alternate -- spawn_join   # the pairs whose name has this
//! RUNS=9 cargo bench --bench alternate
//! ```
//!
//! For each pair: each run times `BATCHES` batches of each side, in the
//! order A B B A A B B A … (so a drift over the run favours neither), after
//! a warm-up; a batch repeats the workload until it takes at least
//! `BATCH_MS` milliseconds (default 5). Both sides share the process and its
//! allocator: what one side leaves in glibc's free lists, the other's first
//! repetition of a batch meets (longer batches dilute it).
//! The run's ratio is median(A) / median(B). The table gives, over the
//! runs, the median ratio and its range (lowest and highest run), with the
//! median time per unit (child, check, scope) of each side. Before the
//! table: the CPU model, its clock as measured here, and the cost of an
//! uncontended locked read-modify-write, the three things that move these
//! ratios between machines (hatchery does few atomics and more plain
//! instructions than most peers: `benches/instructions.sh` counts both).

mod common;
mod workloads;

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use workloads::WORKLOADS;

/// (hatchery's workload, the peer's), as named in `workloads`.
const PAIRS: &[(&str, &str)] = &[
    ("spawn_join/hatchery", "spawn_join/futures_unordered"),
    ("spawn_join/hatchery", "spawn_join/tokio_joinset"),
    ("spawn_join/hatchery", "spawn_join/async_executor"),
    (
        "spawn_join/hatchery_parallel",
        "spawn_join/executor_2_threads",
    ),
    ("cancel_idle/hatchery", "cancel_idle/tokio_token_joinset"),
    ("cancel_idle/hatchery", "cancel_idle/tokio_abort_all"),
    ("checkpoint/hatchery", "checkpoint/tokio_is_cancelled"),
    ("timeout_scope/hatchery", "timeout_scope/tokio"),
    ("scale/hatchery_1000000", "scale/hatchery_1000"),
    // Not hatchery against a peer: the peers' own growth, for comparison.
    (
        "scale/futures_unordered_1000000",
        "scale/futures_unordered_1000",
    ),
    (
        "scale/tokio_abort_all_1000000",
        "scale/tokio_abort_all_1000",
    ),
];

const BATCHES: usize = 20;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// One side of a pair: its repetition, and how many repetitions a batch
/// holds.
struct Side {
    units: usize,
    once: Box<dyn FnMut()>,
    reps: usize,
}

impl Side {
    fn new(name: &str) -> Side {
        let (_, units, setup) = WORKLOADS
            .iter()
            .find(|(n, _, _)| *n == name)
            .unwrap_or_else(|| panic!("no workload {name}"));
        let mut once = setup();
        // Warm up, then size a batch to at least `BATCH_MS`.
        let started = Instant::now();
        once();
        once();
        let each = started.elapsed() / 2;
        let batch = Duration::from_millis(
            std::env::var("BATCH_MS")
                .ok()
                .and_then(|ms| ms.parse().ok())
                .unwrap_or(5),
        );
        let reps = (batch.as_nanos() / each.as_nanos().max(1)).max(1) as usize;
        Side {
            units: *units,
            once,
            reps,
        }
    }

    /// Nanoseconds per unit of work, over one batch.
    fn batch(&mut self) -> f64 {
        let started = Instant::now();
        for _ in 0..self.reps {
            (self.once)();
        }
        started.elapsed().as_nanos() as f64 / (self.reps * self.units) as f64
    }
}

/// One run: (hatchery's median ns per unit, the peer's).
fn run(ours: &mut Side, peer: &mut Side) -> (f64, f64) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..BATCHES {
        if i % 2 == 0 {
            a.push(ours.batch());
            b.push(peer.batch());
        } else {
            b.push(peer.batch());
            a.push(ours.batch());
        }
    }
    (median(&mut a), median(&mut b))
}

fn show(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.3} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.3} µs", ns / 1e3)
    } else {
        format!("{ns:.2} ns")
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|model| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The clock, measured: each step of this chain is an xor (1 cycle) then a
/// 64-bit multiplication (3 cycles) of the step before, on x86-64 cores of
/// the last decade (Intel since Nehalem, AMD Zen); neither can be
/// reassociated or overlapped, so a step takes 4 cycles.
fn measured_ghz() -> f64 {
    let chain = black_box(200_000_000u64);
    let (key, factor) = black_box((0x5555_5555_5555_5555u64, 0x9E37_79B9_7F4A_7C15u64));
    let mut best = f64::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let mut x = black_box(1u64);
        for _ in 0..chain {
            x = (x ^ key).wrapping_mul(factor);
        }
        black_box(x);
        best = best.min(started.elapsed().as_nanos() as f64);
    }
    chain as f64 * 4.0 / best
}

/// Nanoseconds per uncontended locked read-modify-write.
fn locked_rmw_ns() -> f64 {
    let cell = AtomicU64::new(0);
    let n = 20_000_000u64;
    let mut best = f64::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        for _ in 0..n {
            black_box(&cell).fetch_add(1, Ordering::AcqRel);
        }
        best = best.min(started.elapsed().as_nanos() as f64 / n as f64);
    }
    best
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let filter = args.first().map(String::as_str).unwrap_or("");
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|runs| runs.parse().ok())
        .unwrap_or(5);
    println!("host: {}", cpu_model());
    println!(
        "clock, measured: {:.2} GHz; one locked read-modify-write: {:.2} ns",
        measured_ghz(),
        locked_rmw_ns()
    );
    println!("{runs} runs of {BATCHES} alternating batches per pair\n");
    println!(
        "| hatchery | peer | hatchery per unit | peer per unit | ratio (median) | ratio (range) |"
    );
    println!("|---|---|---|---|---|---|");
    for &(ours, theirs) in PAIRS {
        if !ours.contains(filter) && !theirs.contains(filter) {
            continue;
        }
        let mut ours_side = Side::new(ours);
        let mut peer_side = Side::new(theirs);
        let (mut a, mut b, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            let (x, y) = run(&mut ours_side, &mut peer_side);
            a.push(x);
            b.push(y);
            ratios.push(x / y);
        }
        let low = ratios.iter().copied().fold(f64::MAX, f64::min);
        let high = ratios.iter().copied().fold(f64::MIN, f64::max);
        println!(
            "| {ours} | {theirs} | {} | {} | {:.2}x | {low:.2}–{high:.2}x |",
            show(median(&mut a)),
            show(median(&mut b)),
            median(&mut ratios),
        );
    }
}
