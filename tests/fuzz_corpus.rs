//! Replays the fuzz corpora (fuzz/corpus/nursery_tree/, report_capture/,
//! parallel/) without libFuzzer, plus a few thousand programs from a
//! fixed-seed generator, and checks every invariant the fuzz targets check
//! (see tests/fuzz_program), and the programs of the defects the fuzzer
//! found (each failed before its fix).
#![cfg(feature = "test-util")]

use std::path::Path;
use std::sync::Mutex;

mod fuzz_program;

/// `testing::live()` is process-wide: one run at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn run_input(name: &str, data: &[u8], failures: &mut Vec<String>) -> Option<fuzz_program::Stats> {
    let program = fuzz_program::decode(data);
    match fuzz_program::run(&program) {
        Ok(stats) => Some(stats),
        Err(why) => {
            let program = if std::env::var_os("HATCHERY_FUZZ_SHRINK").is_some() {
                fuzz_program::shrink(&program, &|p| fuzz_program::run(p).is_err())
            } else {
                program
            };
            let why = fuzz_program::run(&program).err().unwrap_or(why);
            failures.push(format!("{name}: {why}\n  program: {program:?}"));
            None
        }
    }
}

#[test]
fn the_corpus_replays_without_a_violation() {
    let _guard = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/nursery_tree");
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("cannot read the corpus at {}: {error}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    inputs.sort();
    assert!(
        inputs.len() >= 20,
        "the corpus has only {} inputs",
        inputs.len()
    );
    let mut failures = Vec::new();
    let (mut nurseries, mut panics, mut blocking, mut forevers) = (0, 0, 0, 0);
    for path in &inputs {
        let data = std::fs::read(path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy();
        if let Some(stats) = run_input(&name, &data, &mut failures) {
            nurseries += stats.nurseries;
            panics += usize::from(stats.panicked);
            blocking += stats.blocking;
            forevers += stats.forevers;
        }
        // Enough to read; the rest may each wait out a hung thread.
        if failures.len() >= 3 {
            break;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!(
        "replayed {} inputs: {nurseries} nurseries, {panics} ended in a panic, {blocking} \
         blocking closures, {forevers} sleep_forever waits",
        inputs.len()
    );
    assert!(
        nurseries > inputs.len(),
        "the corpus barely opens nurseries"
    );
}

#[test]
fn the_fixed_programs_keep_every_invariant() {
    let _guard = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for (index, program) in fuzz_program::fixed_programs().iter().enumerate() {
        if let Err(why) = fuzz_program::run(program) {
            panic!("fixed program {index}: {why}\n  program: {program:?}");
        }
    }
}

#[test]
fn random_programs_keep_every_invariant() {
    let _guard = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let count: usize = std::env::var("HATCHERY_FUZZ_PROGRAMS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3000);
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut failures = Vec::new();
    let (mut nurseries, mut scopes, mut polls, mut panics) = (0, 0, 0, 0);
    let (mut blocking, mut forevers) = (0, 0);
    for index in 0..count {
        let len = (next() % 512) as usize;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if let Some(stats) = run_input(&format!("random program {index}"), &data, &mut failures) {
            nurseries += stats.nurseries;
            scopes += stats.scopes;
            polls += stats.polls;
            panics += usize::from(stats.panicked);
            blocking += stats.blocking;
            forevers += stats.forevers;
        }
        if failures.len() >= 3 {
            break;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!(
        "{count} random programs: {nurseries} nurseries, {scopes} scopes, {polls} polls, \
         {panics} ended in a panic, {blocking} blocking closures, {forevers} sleep_forever waits"
    );
    assert!(
        nurseries > 2 * count,
        "the generator barely opens nurseries"
    );
}

/// Replays every input of `fuzz/corpus/<corpus>` (at least 20) through
/// `run_one`, one program at a time; fails with every violation found.
fn replay_corpus(corpus: &str, run_one: impl Fn(&[u8]) -> Result<(), String>) {
    let _guard = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(corpus);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("cannot read the corpus at {}: {error}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    inputs.sort();
    assert!(
        inputs.len() >= 20,
        "the corpus has only {} inputs",
        inputs.len()
    );
    let mut failures = Vec::new();
    for path in &inputs {
        if let Err(why) = run_one(&std::fs::read(path).unwrap()) {
            let name = path.file_name().unwrap().to_string_lossy();
            failures.push(format!("{name}: {why}"));
            if failures.len() >= 3 {
                break;
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!("replayed {} {corpus} inputs", inputs.len());
}

#[test]
fn the_report_capture_corpus_replays_without_a_violation() {
    replay_corpus("report_capture", |data| {
        let program = fuzz_program::decode_reporting(data);
        fuzz_program::run(&program)
            .map(drop)
            .map_err(|why| format!("{why}\n  program: {program:?}"))
    });
}

/// Writes seed inputs for the three corpora (each program kind the
/// language has, found among fixed-seed random inputs):
/// `cargo test --features test-util --test fuzz_corpus write_seeds -- --ignored`.
#[test]
#[ignore = "writes files: run by hand to refresh the seeds"]
fn write_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut state = 0x1234_5678_9ABC_DEF1u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let kinds = [
        "Guard",
        "shield: true",
        "Join",
        "unordered: true",
        "Select",
        "StartNoCall",
        "early: true",
        "Bomb",
        "Many(10",
        "Foreign",
        "MoveDeadline",
        "DropNursery",
        "BombAfter",
        "Blocking",
        "Forever",
        "Race",
    ];
    let mut found = vec![0; kinds.len()];
    let mut wide = 0;
    for _ in 0..200_000 {
        let len = 64 + (next() % 448) as usize;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let text = format!("{:?}", fuzz_program::decode(&data));
        let mut keep = false;
        for (i, kind) in kinds.iter().enumerate() {
            if text.contains(kind) && found[i] < 4 {
                found[i] += 1;
                keep = true;
            }
        }
        // More than 1,024 children that fail together (the 1,024th to
        // finish among them).
        let failing_wide = text.match_indices("Many(10").any(|(at, _)| {
            let body = &text[at..];
            body[..body.find(']').unwrap_or(body.len())].contains("Fail")
        });
        if (text.contains("Many(10") && wide < 4) || (failing_wide && wide < 12) {
            wide += 1;
            keep = true;
        }
        if keep {
            let name = format!("seed-{:016x}", next());
            std::fs::write(root.join("nursery_tree").join(&name), &data).unwrap();
            std::fs::write(root.join("report_capture").join(&name), &data).unwrap();
        }
    }
    for i in 0..32 {
        let len = 32 + (next() % 224) as usize;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        std::fs::write(root.join("parallel").join(format!("seed-{i:02}")), &data).unwrap();
    }
    eprintln!("seeds per kind: {found:?}");
}

#[test]
fn the_parallel_corpus_replays_without_a_violation() {
    replay_corpus("parallel", |data| {
        let program = fuzz_program::parallel::decode(data);
        fuzz_program::parallel::run(&program)
            .map_err(|why| format!("{why}\n  program: {program:?}"))
    });
}

#[test]
fn random_parallel_programs_keep_every_invariant() {
    let _guard = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let count: usize = std::env::var("HATCHERY_FUZZ_PARALLEL_PROGRAMS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut failures = Vec::new();
    for index in 0..count {
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let len = (next() % 256) as usize;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let program = fuzz_program::parallel::decode(&data);
        if let Err(why) = fuzz_program::parallel::run(&program) {
            failures.push(format!(
                "random parallel program {index}: {why}\n  program: {program:?}"
            ));
            if failures.len() >= 3 {
                break;
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A defect found by the fuzzer (issue 16), fixed: in a shielded scope with a
/// deadline 15 ticks away, a `select` whose losing arm sleeps (it parks, then
/// is dropped in the same poll), then a foreign wait of 19 ticks: the foreign
/// wait was not dropped at the deadline but finished at 19, because the
/// dropped sleep had marked the poll as parked at a hatchery await
/// (`cancel::foreign`, `Parking`).
#[test]
fn a_foreign_wait_after_a_select_is_dropped_at_the_deadline() {
    use fuzz_program::{Block, Step};
    let _guard = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let block = |steps: Vec<Step>| -> Block { steps.into() };
    let program = block(vec![Step::Scope {
        deadline: Some(15),
        shield: true,
        body: block(vec![
            Step::Select(block(vec![Step::Sleep(8)]), block(Vec::new())),
            Step::Foreign(19),
        ]),
    }]);
    let out = fuzz_program::run(&program);
    assert!(out.is_ok(), "{}", out.unwrap_err());
}

/// A defect found by the fuzzer (issue 16), fixed: in this program (found
/// at random, shrunk by hand) a checkpoint inside a freshly entered shielded
/// scope with a deadline 23 ticks away returned `Cancelled` at once. The
/// cause was no scope logic but the time encoding's epoch: taken at the first
/// deadline, after the virtual clock started, so once the 3 x 1,062 children
/// had run for more than 20 ms of real time, every early virtual deadline
/// encoded as "long past". It showed only as the first test of a fresh
/// process; `tests/virtual_epoch.rs` checks the cause alone, in a process of
/// its own.
#[test]
fn a_checkpoint_in_a_fresh_shielded_scope_after_many_children_is_not_cancelled() {
    use fuzz_program::{Block, Step};
    let _guard = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let block = |steps: Vec<Step>| -> Block { steps.into() };
    let checkpoints = |n: usize| (0..n).map(|_| Step::Checkpoint).collect::<Vec<_>>();
    let shielded = |deadline: u8, body: Block| Step::Scope {
        deadline: Some(deadline),
        shield: true,
        body,
    };
    let mut innermost: Vec<Step> = (0..3)
        .map(|_| Step::Many(1062, block(checkpoints(3))))
        .collect();
    innermost.extend(checkpoints(3));
    let mut level3 = vec![Step::DropNursery(6, block(innermost))];
    level3.extend(checkpoints(2));
    level3.push(shielded(
        20,
        block(vec![shielded(23, block(checkpoints(1)))]),
    ));
    level3.push(shielded(
        23,
        block(vec![shielded(23, block(checkpoints(1)))]),
    ));
    level3.push(Step::Scope {
        deadline: Some(23),
        shield: false,
        body: block(vec![Step::Join {
            unordered: true,
            count: 1,
            arms: vec![block(vec![Step::Sleep(0)]), block(Vec::new())],
        }]),
    });
    let mut program = block(level3);
    for _ in 0..3 {
        program = block(vec![Step::DropNursery(6, program)]);
    }
    let out = fuzz_program::run(&program);
    assert!(out.is_ok(), "{}", out.unwrap_err());
}

/// Replays one input: `HATCHERY_FUZZ_INPUT=path cargo test --features test-util
/// --test fuzz_corpus one_input -- --nocapture` (nothing to do without it).
#[test]
fn one_input() {
    let _guard = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Ok(path) = std::env::var("HATCHERY_FUZZ_INPUT") {
        let data = std::fs::read(path).unwrap();
        eprintln!("program: {:?}", fuzz_program::decode(&data));
        let mut failures = Vec::new();
        run_input("one", &data, &mut failures);
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}
