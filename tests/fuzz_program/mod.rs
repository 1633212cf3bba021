//! The `nursery_tree` program: random trees of nurseries, cancel scopes and
//! tasks, decoded from bytes, run under virtual time on a deterministic
//! executor, and checked against a model. Shared by the cargo-fuzz target
//! (`fuzz/fuzz_targets/nursery_tree.rs`) and the corpus replay
//! (`tests/fuzz_corpus.rs`).
//!
//! The model keeps, for every scope, what the program did to it (cancelled
//! it, moved its deadline, toggled its shield) and, for every nursery, which
//! of its tasks are alive and which errors and panics they raised. Checked:
//!
//! * a nursery never returns while one of its tasks is alive;
//! * a checkpoint or sleep returns `Cancelled` only if a cancelled scope (or a
//!   nursery that saw a failure) is visible from it (so shields hold), and
//!   always does when an explicitly cancelled or expired scope is visible
//!   (cancellation is level-triggered);
//! * a task's future is dropped unfinished only when a nursery around it was
//!   dropped early, or when it waited in a foreign await (a future that never
//!   consults hatchery) while a cancellation was visible from its scope, at
//!   the virtual instant that cancellation appeared (everything cancelled
//!   otherwise ran to its end, its cleanup); a foreign await behind a shield
//!   is never dropped, and one whose scope was cancelled earlier never
//!   finishes;
//! * a nursery's error holds exactly the errors its tasks returned; a panic
//!   comes out of the nursery it was raised in exactly once, with its payload;
//! * the program ends within a bound of polls, and never stalls with every
//!   task waiting and no timer pending (a lost wakeup or a deadlock);
//! * afterwards, no task, scope or listener is left alive.
//!
//! Issue 16 added: cleanup after a `Cancelled` (`Guard`, shielded or not,
//! a failure during cleanup replacing the cancellation); foreign awaits
//! with a drop flag (`ForeignAwait`: dropped unfinished only for a visible
//! cancellation, as soon as it appeared); `join_all` (over more than 30
//! futures too), `FuturesUnordered` and `select` inside a task (an arm that
//! is dropped is a drop domain: what it opened may be dropped with it); a
//! `start()` whose child drops `Started` or never calls it (the panic, or
//! the wait, trio's rule predicts); a `Drop` that panics, during the poll
//! (`Bomb`) and after the child returned (`BombAfter`); more than 1,024
//! children at once (`Many`); `Report::capture` (`Report`). The failure
//! oracle is exact: a failure cancels its nursery's scope at once, except
//! for a child that fails in the very poll of its hand-over by `started`,
//! which the nursery sees when it admits it, before the virtual clock
//! moves. Inside a combinator, a foreign await is only checked for being
//! dropped for a visible cancellation (the task is kept while a sibling arm
//! is parked at a hatchery await, so it may be dropped later, or finish).
//! `parallel.rs` is the program of the `parallel` target.
//!
//! Then: blocking work (`Blocking`, `spawn_blocking`, run in lock-step with
//! the driver: see `blocking.rs`): its cancel handle says exactly what the
//! model says at every instant the driver is idle, its failure and panic
//! come out of its nursery, the nursery waits for it, the report lists it
//! (abandoned exactly when a nursery around it was dropped); and a wait in
//! `sleep_forever()` or `cancelled()` (`Forever`) in a scope of its own:
//! it ends only for a cancellation visible from it, at once, and its scope
//! catches that cancellation exactly when none from outside is visible; when
//! every task waits and no timer is pending, the driver cancels the scope
//! of each such wait (after checking that none of them missed a visible
//! cancellation), so that a stall is still a lost wakeup or a deadlock;
//! and `Race`, a block raced by `select` against `cancelled()`, the wait
//! winning exactly when a cancellation is visible, at once (a wait dropped
//! in the poll it parked in must not leave its task marked parked).
#![allow(dead_code)]

#[path = "parallel.rs"]
pub mod parallel;

#[path = "blocking.rs"]
mod blocking;

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::{AssertUnwindSafe, resume_unwind};
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use arbitrary::Unstructured;
use futures_lite::FutureExt;
use hatchery::testing::{self, VirtualClock};
use hatchery::{
    CancelError, CancelHandle, CancelScope, Cancelled, LocalNursery, NurseryError, Started,
    checkpoint, sleep, typed::local_nursery,
};

// ---------------------------------------------------------------- programs

pub type Block = Rc<[Step]>;

#[derive(Debug, Clone)]
pub enum Step {
    Checkpoint,
    Sleep(u8),
    /// A wait of that many ticks in a future that never consults hatchery.
    Foreign(u8),
    Spawn(Block),
    Start {
        before: Block,
        after: Block,
    },
    Nursery(Block),
    /// A nursery raced against a sleep of that many ticks: dropped if the
    /// sleep ends first (the hard cancel).
    DropNursery(u8, Block),
    Scope {
        deadline: Option<u8>,
        shield: bool,
        body: Block,
    },
    Cancel(u8),
    MoveDeadline(u8, Option<u8>),
    ToggleShield(u8),
    Fail,
    Panic,
    /// Runs `body`; if it ends with `Cancelled`, runs `cleanup` (behind a
    /// shield of its own if `shield`), whose failure replaces the
    /// cancellation.
    Guard {
        body: Block,
        cleanup: Block,
        shield: bool,
    },
    /// `count` futures, the arms in turn, run concurrently inside the task:
    /// by `join_all`, or by a `FuturesUnordered` if `unordered`.
    Join {
        unordered: bool,
        count: u8,
        arms: Vec<Block>,
    },
    /// Two blocks raced by `select` inside the task: the loser is dropped.
    Select(Block, Block),
    /// A `start()` whose child never calls `started`: it drops the handle
    /// after `before` if `early`, else holds it until it returns.
    StartNoCall {
        before: Block,
        after: Block,
        early: bool,
    },
    /// A guard whose `Drop` panics when the block ends (or its future is
    /// dropped), unless it is already unwinding or a hard cancel drops it.
    Bomb,
    /// That many children with the same body (more than 1,024 of them
    /// cross every batch size of the child set).
    Many(u16, Block),
    /// `Report::capture()`, checked: no task twice, every spawned task that
    /// has run and not ended is there.
    Report,
    /// A spawned child whose future panics in its `Drop`, after it returned.
    BombAfter,
    /// Blocking work (`spawn_blocking`) in the nursery: a closure on a
    /// thread that polls its cancel handle until it is cancelled or that
    /// many ticks passed, then ends as `end` says (see `blocking.rs`).
    Blocking(u8, BlockEnd),
    /// A wait in `sleep_forever()` (`cancelled()` if `cancelled`) in a scope
    /// of its own, which the driver cancels if every task waits and nothing
    /// else can (so the block moves on). Cancelled from outside, it runs
    /// `cleanup` (behind a shield of its own if `shield`; a failure there
    /// replaces the cancellation) and unwinds.
    Forever {
        cleanup: Block,
        shield: bool,
        cancelled: bool,
    },
    /// A block raced by `select` against `cancelled()` (`sleep_forever()`
    /// if false), the wait polled first: the wait wins exactly when a
    /// cancellation is visible (the block is dropped), else the block ends
    /// and the wait is dropped (in the very poll it parked in, if the block
    /// ends at once).
    Race(bool, Block),
}

/// How blocking work ends, at its time or when it sees the cancellation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockEnd {
    /// `Ok`, or `Cancelled` if it saw the cancellation.
    Done,
    /// A failure (a failure during cleanup, if it was cancelled).
    Fail,
    /// A panic.
    Panic,
}

const MAX_DEPTH: u32 = 5;
const MAX_BLOCK: u32 = 6;
const MAX_STEPS: u32 = 160;
/// The most copies of a step that combinators around it may run.
const MAX_MULT: u32 = 64;

/// Decodes a program; any input decodes to some (possibly empty) program.
pub fn decode(data: &[u8]) -> Block {
    let mut u = Unstructured::new(data);
    let mut budget = MAX_STEPS;
    block(&mut u, 0, 1, &mut budget)
}

fn block(u: &mut Unstructured<'_>, depth: u32, mult: u32, budget: &mut u32) -> Block {
    let len = u.int_in_range(0..=MAX_BLOCK).unwrap_or(0);
    block_of(u, len, depth, mult, budget)
}

fn block_of(u: &mut Unstructured<'_>, len: u32, depth: u32, mult: u32, budget: &mut u32) -> Block {
    let mut steps = Vec::new();
    for _ in 0..len {
        if *budget == 0 || u.is_empty() {
            break;
        }
        *budget -= 1;
        steps.push(step(u, depth, mult, budget));
    }
    steps.into()
}

fn step(u: &mut Unstructured<'_>, depth: u32, mult: u32, budget: &mut u32) -> Step {
    // Failures and panics end a block: they get one weight in 30 each.
    let kind = match u.int_in_range(0..=29u8).unwrap_or(0) {
        15 | 16 => 3,
        17 => 5,
        18 => 7,
        19 => 4,
        kind => kind,
    };
    let byte = |u: &mut Unstructured<'_>| u.arbitrary::<u8>().unwrap_or(0);
    let nested = depth < MAX_DEPTH;
    match kind {
        1 | 2 => Step::Sleep(byte(u) % 24),
        3 if nested => Step::Spawn(block(u, depth + 1, mult, budget)),
        4 if nested => Step::Start {
            before: block(u, depth + 1, mult, budget),
            after: block(u, depth + 1, mult, budget),
        },
        5 if nested => Step::Nursery(block(u, depth + 1, mult, budget)),
        6 if nested => Step::DropNursery(byte(u) % 24, block(u, depth + 1, mult, budget)),
        7 if nested => {
            let flags = byte(u);
            Step::Scope {
                deadline: (flags & 1 == 1).then(|| byte(u) % 24),
                shield: flags & 2 == 2,
                body: block(u, depth + 1, mult, budget),
            }
        }
        8 => Step::Cancel(byte(u)),
        9 => {
            let scope = byte(u);
            let to = byte(u);
            Step::MoveDeadline(scope, (to < 200).then_some(to % 24))
        }
        10 => Step::ToggleShield(byte(u)),
        11 => Step::Fail,
        12 => Step::Panic,
        13 if nested => Step::Race(byte(u) & 1 == 1, block(u, depth + 1, mult, budget)),
        14 => {
            let flags = byte(u);
            Step::Forever {
                cleanup: if nested {
                    block(u, depth + 1, mult, budget)
                } else {
                    Block::default()
                },
                shield: flags & 1 == 1,
                cancelled: flags & 2 == 2,
            }
        }
        20 | 21 if nested => Step::Guard {
            body: block(u, depth + 1, mult, budget),
            cleanup: block(u, depth + 1, mult, budget),
            shield: byte(u) & 1 == 1,
        },
        // What runs inside a combinator's arms runs once per arm: `mult`
        // bounds the product of the counts around a step.
        22 if nested && mult < MAX_MULT => {
            let flags = byte(u);
            let count = (1 + byte(u) % 40).min((MAX_MULT / mult) as u8);
            let inner = mult * u32::from(count);
            let unordered = flags & 4 == 4;
            // `FuturesUnordered` (and `join_all` over more than 30 futures,
            // which uses it) polls only what woke it: nested scopes and
            // nurseries in its arms hold their task (`cancel::foreign::Hold`).
            let arms = (0..1 + flags % 3)
                .map(|_| block(u, depth + 1, inner, budget))
                .collect();
            Step::Join {
                unordered,
                count,
                arms,
            }
        }
        23 if nested => Step::Select(
            block(u, depth + 1, mult, budget),
            block(u, depth + 1, mult, budget),
        ),
        24 if nested => Step::StartNoCall {
            before: block(u, depth + 1, mult, budget),
            after: block(u, depth + 1, mult, budget),
            early: byte(u) & 1 == 1,
        },
        25 => Step::Bomb,
        26 if nested && *budget > 40 && mult < MAX_MULT => {
            let size = byte(u);
            // The body is short (no nesting): it is run by every child.
            let body = block_of(u, 3, MAX_DEPTH, mult, budget);
            let count = if size >= 192 && mult == 1 {
                *budget = budget.saturating_sub(40);
                1025 + u16::from(size % 64)
            } else {
                (2 + u16::from(size % 40)).min((MAX_MULT / mult) as u16)
            };
            Step::Many(count, body)
        }
        27 => Step::Foreign(byte(u) % 24),
        // Not in the body of `Many` (a snapshot per child of a thousand).
        28 if nested => Step::Report,
        29 => Step::BombAfter,
        0 => {
            let b = byte(u);
            let end = match (b / 24) % 4 {
                0 | 1 => BlockEnd::Done,
                2 => BlockEnd::Fail,
                _ => BlockEnd::Panic,
            };
            Step::Blocking(b % 24, end)
        }
        _ => Step::Checkpoint,
    }
}

/// Hand-written programs for defects the random ones reach too rarely,
/// replayed with the corpus: the 1,024th child to finish since the last
/// flush of the finished batch fails (issue 15, item 7), after 1,023 that
/// finished at once or were cancelled; sleeps inside combinators in a
/// nursery that fails; blocking work and `sleep_forever` in each of the
/// ways they end.
pub fn fixed_programs() -> Vec<Block> {
    let block = |steps: Vec<Step>| -> Block { steps.into() };
    let fail = || block(vec![Step::Fail]);
    vec![
        block(vec![
            Step::Many(1023, block(Vec::new())),
            Step::Spawn(fail()),
        ]),
        block(vec![
            Step::Many(1023, block(vec![Step::Sleep(5)])),
            Step::Spawn(block(vec![Step::Sleep(5), Step::Fail])),
        ]),
        block(vec![
            Step::Spawn(block(vec![Step::Sleep(2), Step::Fail])),
            Step::Many(1100, block(vec![Step::Sleep(9)])),
            Step::Many(1100, block(vec![Step::Checkpoint, Step::Fail])),
        ]),
        // Sleeps inside combinators in a nursery that fails (they must be
        // woken with `Cancelled` at once: a combinator re-polls only what
        // woke it).
        block(vec![
            Step::Spawn(block(vec![Step::Join {
                unordered: true,
                count: 3,
                arms: vec![
                    block(vec![Step::Sleep(20)]),
                    block(vec![Step::Checkpoint, Step::Sleep(15)]),
                ],
            }])),
            Step::Spawn(block(vec![Step::Join {
                unordered: false,
                count: 40,
                arms: vec![block(vec![Step::Sleep(20)])],
            }])),
            Step::Sleep(1),
            Step::Fail,
        ]),
        // Blocking work: cancelled by a deadline around its nursery; its
        // failure cancelling its siblings; its panic; abandoned by a dropped
        // nursery (and so reported).
        block(vec![Step::Scope {
            deadline: Some(5),
            shield: false,
            body: block(vec![Step::Nursery(block(vec![
                Step::Blocking(20, BlockEnd::Done),
                Step::Blocking(20, BlockEnd::Fail),
                Step::Sleep(1),
            ]))]),
        }]),
        block(vec![Step::Nursery(block(vec![
            Step::Blocking(3, BlockEnd::Fail),
            Step::Spawn(block(vec![Step::Sleep(20)])),
            Step::Sleep(20),
        ]))]),
        block(vec![Step::Nursery(block(vec![
            Step::Blocking(2, BlockEnd::Panic),
            Step::Spawn(block(vec![Step::Forever {
                cleanup: block(vec![Step::Checkpoint]),
                shield: true,
                cancelled: false,
            }])),
        ]))]),
        block(vec![
            Step::DropNursery(
                2,
                block(vec![
                    Step::Blocking(20, BlockEnd::Done),
                    Step::Sleep(1),
                    Step::Report,
                    Step::Sleep(5),
                ]),
            ),
            Step::Report,
            Step::Sleep(1),
            Step::Report,
        ]),
        // sleep_forever: cancelled from outside (cleanup, shielded or not,
        // and a failure in it); moved on by the driver; in combinators'
        // arms in a nursery that fails.
        block(vec![
            Step::Scope {
                deadline: Some(4),
                shield: false,
                body: block(vec![Step::Forever {
                    cleanup: block(vec![Step::Checkpoint, Step::Sleep(3)]),
                    shield: false,
                    cancelled: true,
                }]),
            },
            Step::Scope {
                deadline: Some(4),
                shield: false,
                body: block(vec![Step::Forever {
                    cleanup: block(vec![Step::Sleep(3), Step::Fail]),
                    shield: true,
                    cancelled: false,
                }]),
            },
        ]),
        block(vec![
            Step::Forever {
                cleanup: block(vec![Step::Fail]),
                shield: false,
                cancelled: false,
            },
            Step::Sleep(1),
            Step::Spawn(block(vec![Step::Forever {
                cleanup: block(Vec::new()),
                shield: false,
                cancelled: true,
            }])),
            Step::Sleep(2),
        ]),
        block(vec![
            Step::Spawn(block(vec![Step::Join {
                unordered: true,
                count: 3,
                arms: vec![block(vec![Step::Forever {
                    cleanup: block(vec![Step::Checkpoint]),
                    shield: true,
                    cancelled: false,
                }])],
            }])),
            Step::Spawn(block(vec![Step::Select(
                block(vec![Step::Forever {
                    cleanup: block(Vec::new()),
                    shield: false,
                    cancelled: true,
                }]),
                block(vec![Step::Sleep(4)]),
            )])),
            Step::Sleep(2),
            Step::Fail,
        ]),
        // Found by the fuzzer (a fault of the model, not of the crate): a
        // child started from a combinator's arm, handed over, belongs to the
        // nursery; the arm unwinding with a panic does not drop it, nor the
        // blocking work of a nursery inside it.
        block(vec![Step::Join {
            unordered: false,
            count: 4,
            arms: vec![
                block(Vec::new()),
                block(Vec::new()),
                block(vec![
                    Step::Start {
                        before: block(Vec::new()),
                        after: block(vec![Step::Nursery(block(vec![Step::Blocking(
                            18,
                            BlockEnd::Done,
                        )]))]),
                    },
                    Step::Panic,
                ]),
            ],
        }]),
        // `cancelled()` dropped by a `select` in the poll it parked in (the
        // block it races ends at once), then a foreign wait in a shielded
        // scope whose deadline comes first: dropped at the deadline.
        block(vec![Step::Scope {
            deadline: Some(15),
            shield: true,
            body: block(vec![
                Step::Race(true, block(Vec::new())),
                Step::Race(false, block(vec![Step::Checkpoint])),
                Step::Foreign(19),
            ]),
        }]),
        block(vec![Step::Scope {
            deadline: Some(3),
            shield: false,
            body: block(vec![Step::Race(
                false,
                block(vec![Step::Sleep(9), Step::Fail]),
            )]),
        }]),
        // Found by the fuzzer (a fault of the harness): blocking work whose
        // nursery is dropped before a thread runs it is dropped on that
        // thread, with its cancel handle, a moment later.
        block(vec![
            Step::DropNursery(0, block(vec![Step::Checkpoint, Step::Checkpoint])),
            Step::DropNursery(
                1,
                block(vec![
                    Step::Blocking(1, BlockEnd::Done),
                    Step::Blocking(5, BlockEnd::Done),
                ]),
            ),
        ]),
        // Found by the fuzzer (a fault of the model): a `Bomb` in a
        // `join_all` inside a `FuturesUnordered` arm, dropped with its task
        // (a foreign wait in a nursery that blocking work failed), made the
        // `FuturesUnordered` leak its other arms.
        block(vec![Step::Join {
            unordered: true,
            count: 5,
            arms: vec![
                block(vec![
                    Step::Blocking(10, BlockEnd::Fail),
                    Step::Join {
                        unordered: false,
                        count: 3,
                        arms: vec![
                            block(Vec::new()),
                            block(vec![Step::Bomb, Step::Foreign(15)]),
                        ],
                    },
                ]),
                block(Vec::new()),
            ],
        }]),
    ]
}

/// Decodes a program for the `report_capture` target: a `Report` step
/// after every step, so that the tree is snapshotted at every change.
pub fn decode_reporting(data: &[u8]) -> Block {
    reporting(&decode(data))
}

fn reporting(block: &Block) -> Block {
    let mut steps = Vec::new();
    for step in block.iter() {
        let inner: Vec<Block> = match step {
            // Not in the body of `Many`: a snapshot per child of a thousand.
            Step::Spawn(b) | Step::Nursery(b) | Step::DropNursery(_, b) => vec![reporting(b)],
            Step::Scope { body, .. } => vec![reporting(body)],
            Step::Start { before, after } | Step::StartNoCall { before, after, .. } => {
                vec![reporting(before), reporting(after)]
            }
            Step::Guard { body, cleanup, .. } => vec![reporting(body), reporting(cleanup)],
            Step::Forever { cleanup, .. } => vec![reporting(cleanup)],
            Step::Race(_, b) => vec![reporting(b)],
            Step::Join { arms, .. } => arms.iter().map(reporting).collect(),
            Step::Select(a, b) => vec![reporting(a), reporting(b)],
            _ => Vec::new(),
        };
        steps.push(if inner.is_empty() {
            step.clone()
        } else {
            rebuild(step, inner)
        });
        steps.push(Step::Report);
    }
    steps.into()
}

/// Shrinks a program that `fails` to a smaller one that still fails (for
/// reading a violation: `HATCHERY_FUZZ_SHRINK=1` in tests/fuzz_corpus.rs).
pub fn shrink(program: &Block, fails: &dyn Fn(&Block) -> bool) -> Block {
    let mut best: Block = Rc::clone(program);
    loop {
        let mut progress = false;
        for candidate in smaller(&best) {
            if fails(&candidate) {
                best = candidate;
                progress = true;
                break;
            }
        }
        if !progress {
            return best;
        }
    }
}

/// Every program one step smaller than `block`.
fn smaller(block: &Block) -> Vec<Block> {
    let mut out = Vec::new();
    for i in 0..block.len() {
        let with = |replacement: Vec<Step>| -> Block {
            let mut steps: Vec<Step> = block[..i].to_vec();
            steps.extend(replacement);
            steps.extend(block[i + 1..].iter().cloned());
            steps.into()
        };
        out.push(with(Vec::new()));
        let inner: Vec<Block> = match &block[i] {
            Step::Spawn(b) | Step::Nursery(b) | Step::DropNursery(_, b) | Step::Many(_, b) => {
                vec![Rc::clone(b)]
            }
            Step::Scope { body, .. } => vec![Rc::clone(body)],
            Step::Start { before, after } | Step::StartNoCall { before, after, .. } => {
                vec![Rc::clone(before), Rc::clone(after)]
            }
            Step::Guard { body, cleanup, .. } => vec![Rc::clone(body), Rc::clone(cleanup)],
            Step::Forever { cleanup, .. } => vec![Rc::clone(cleanup)],
            Step::Race(_, b) => vec![Rc::clone(b)],
            Step::Join { arms, .. } => arms.clone(),
            Step::Select(a, b) => vec![Rc::clone(a), Rc::clone(b)],
            _ => Vec::new(),
        };
        for b in &inner {
            out.push(with(b.to_vec()));
        }
        // The same step with each inner block one step smaller.
        for (k, b) in inner.iter().enumerate() {
            for small in smaller(b) {
                let mut replaced = inner.clone();
                replaced[k] = small;
                let step = rebuild(&block[i], replaced);
                out.push(with(vec![step]));
            }
        }
        match &block[i] {
            Step::Join {
                unordered,
                count,
                arms,
            } if *count > 1 => out.push(with(vec![Step::Join {
                unordered: *unordered,
                count: count / 2,
                arms: arms.clone(),
            }])),
            Step::Many(count, body) if *count > 1 => {
                out.push(with(vec![Step::Many(count / 2, Rc::clone(body))]));
            }
            _ => {}
        }
    }
    out
}

/// `step` with its inner blocks replaced (in the order `smaller` lists them).
fn rebuild(step: &Step, mut inner: Vec<Block>) -> Step {
    let mut next = || inner.remove(0);
    match step {
        Step::Spawn(_) => Step::Spawn(next()),
        Step::Nursery(_) => Step::Nursery(next()),
        Step::DropNursery(t, _) => Step::DropNursery(*t, next()),
        Step::Many(c, _) => Step::Many(*c, next()),
        Step::Scope {
            deadline, shield, ..
        } => Step::Scope {
            deadline: *deadline,
            shield: *shield,
            body: next(),
        },
        Step::Start { .. } => Step::Start {
            before: next(),
            after: next(),
        },
        Step::StartNoCall { early, .. } => Step::StartNoCall {
            before: next(),
            after: next(),
            early: *early,
        },
        Step::Guard { shield, .. } => Step::Guard {
            body: next(),
            cleanup: next(),
            shield: *shield,
        },
        Step::Join {
            unordered, count, ..
        } => Step::Join {
            unordered: *unordered,
            count: *count,
            arms: inner,
        },
        Step::Select(..) => Step::Select(next(), next()),
        Step::Race(which, _) => Step::Race(*which, next()),
        Step::Forever {
            shield, cancelled, ..
        } => Step::Forever {
            cleanup: next(),
            shield: *shield,
            cancelled: *cancelled,
        },
        other => other.clone(),
    }
}

fn ticks(t: u8) -> Duration {
    Duration::from_millis(u64::from(t))
}

// ------------------------------------------------------------------ errors

/// The error every task returns: a cancellation or a numbered failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    Cancelled,
    Code(u32),
}

impl From<Cancelled> for Fault {
    fn from(_: Cancelled) -> Self {
        Fault::Cancelled
    }
}

impl CancelError for Fault {
    fn is_cancelled(&self) -> bool {
        matches!(self, Fault::Cancelled)
    }
}

/// The payload of the program's own panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PanicId(pub u32);

/// Keeps the program's own panics quiet; any other panic (a bug, or a
/// violated assertion) goes to the hook that was installed before.
pub fn quiet_program_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // start()'s own panic for a child that never calls `started`.
            let started = info
                .payload()
                .downcast_ref::<String>()
                .is_some_and(|text| text.starts_with("hatchery: the child passed to start()"));
            if !info.payload().is::<PanicId>() && !started {
                previous(info);
            }
        }));
    });
}

// ------------------------------------------------------------------- model

struct MScope {
    handle: CancelHandle,
    parent: Option<usize>,
    shield: bool,
    /// `cancel()` was called on it.
    explicit: bool,
    deadline: Option<Instant>,
    /// A task of this nursery failed: it cancels itself (asynchronously).
    failed: bool,
    /// When `cancel()` was called, a task failed, the deadline was last
    /// set, the shield was last set (virtual time).
    explicit_at: Option<Instant>,
    failed_at: Option<Instant>,
    /// A child failed in the very poll in which it called `started`: the
    /// nursery sees the failure when it admits the child, later in its
    /// current poll, so the cancel is certain from the next virtual instant
    /// on (the clock moves only once every task waits).
    failed_pending: Option<Instant>,
    deadline_set_at: Instant,
    shield_set_at: Instant,
}

struct MNursery {
    scope: usize,
    alive: usize,
    raised: Vec<u32>,
    panics: Vec<u32>,
    resumed: u32,
    dropped: bool,
    /// Every nursery around this one.
    ancestors: Vec<usize>,
}

struct Task {
    nursery: usize,
    /// False for a `start()`ed task until it called `started`.
    attached: Cell<bool>,
    /// Who called `start()`, for a task that is starting.
    caller: Option<Rc<Task>>,
    /// The nurseries whose early drop may drop this task unfinished (for a
    /// started child, those of its caller until it is handed over).
    ancestors: RefCell<Vec<usize>>,
    completed: Cell<bool>,
    panicked: Cell<bool>,
    /// How many foreign awaits it is in (a combinator may hold several).
    foreign: Cell<usize>,
    /// One of its foreign awaits was dropped for a visible cancellation:
    /// the task is being dropped with it.
    foreign_dropped: Cell<bool>,
    /// It dropped its `Started` handle without calling `started`.
    start_dropped: Cell<bool>,
    /// What its `start()` must do since it never calls `started`.
    expect: Cell<Expect>,
    /// It called `started` in the poll going on (what it does before it
    /// next returns `Pending` reaches the nursery with the hand-over).
    handing_over: Cell<bool>,
    /// Its future has run (so its nursery has admitted it).
    ran: Cell<bool>,
    /// Its future was dropped.
    gone: Cell<bool>,
    /// Its future panics when it is dropped after it returned.
    bomb_after: Cell<bool>,
}

/// What a `start()` whose child never calls `started` must end with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Nothing special (`started` was called, or not yet decided).
    Usual,
    /// A panic that says the handle was dropped (the child was not
    /// cancelled and went on waiting).
    DroppedPanic,
    /// A panic that says the child returned without calling `started`.
    ReturnedPanic,
}

impl Task {
    /// A task of nursery `nursery`; one with a `caller` is `start()`ing.
    fn new(nursery: usize, caller: Option<Rc<Task>>, ancestors: Vec<usize>) -> Rc<Task> {
        Rc::new(Task {
            nursery,
            attached: Cell::new(caller.is_none()),
            caller,
            ancestors: RefCell::new(ancestors),
            completed: Cell::new(false),
            panicked: Cell::new(false),
            foreign: Cell::new(0),
            foreign_dropped: Cell::new(false),
            start_dropped: Cell::new(false),
            expect: Cell::new(Expect::Usual),
            handing_over: Cell::new(false),
            ran: Cell::new(false),
            gone: Cell::new(false),
            bomb_after: Cell::new(false),
        })
    }
}

#[derive(Default)]
struct World {
    scopes: Vec<MScope>,
    nurseries: Vec<MNursery>,
    violations: Vec<String>,
    /// The spawned tasks by their name (`t` and a number).
    spawned: Vec<(String, Rc<Task>)>,
    next_id: u32,
    polls: u64,
    /// The run's clock (entered by blocking work on its threads).
    clock: Option<Arc<VirtualClock>>,
    /// How many blocking closures the run spawned.
    blocking: usize,
    /// The scopes of the `sleep_forever` waits in progress.
    forever: Vec<usize>,
    /// How many `sleep_forever` waits the run entered.
    forevers: usize,
}

type W = Rc<RefCell<World>>;

impl World {
    fn fresh(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    fn violation(&mut self, what: String) {
        if self.violations.len() < 20 {
            self.violations.push(what);
        }
    }

    /// A new nursery (its scope is set once it exists).
    fn new_nursery(&mut self, scope: usize, ancestors: Vec<usize>) -> usize {
        self.nurseries.push(MNursery {
            scope,
            alive: 0,
            raised: Vec::new(),
            panics: Vec::new(),
            resumed: 0,
            dropped: false,
            ancestors,
        });
        self.nurseries.len() - 1
    }

    /// A drop domain: an entry among the nurseries that no task belongs
    /// to, marked dropped when the combinator arm it stands for is dropped
    /// unfinished.
    fn new_domain(&mut self) -> usize {
        self.new_nursery(usize::MAX, Vec::new())
    }

    /// Nursery `nid` and every nursery around it.
    fn within(&self, nid: usize) -> Vec<usize> {
        let mut nurseries = vec![nid];
        nurseries.extend(&self.nurseries[nid].ancestors);
        nurseries
    }

    /// The scope a step names: any but the two around the whole program
    /// (cancelling those would end most programs at their first checkpoint).
    fn pick(&self, i: u8) -> Option<usize> {
        let named = self.scopes.len().checked_sub(2).filter(|&n| n > 0)?;
        Some(2 + usize::from(i) % named)
    }

    fn new_scope(
        &mut self,
        handle: CancelHandle,
        parent: Option<usize>,
        shield: bool,
        deadline: Option<Instant>,
    ) -> usize {
        let now = hatchery::now();
        self.scopes.push(MScope {
            handle,
            parent,
            shield,
            explicit: false,
            deadline,
            failed: false,
            explicit_at: None,
            failed_at: None,
            failed_pending: None,
            deadline_set_at: now,
            shield_set_at: now,
        });
        self.scopes.len() - 1
    }

    /// Checks what a checkpoint at scope `cur` observed against the model.
    fn check(&mut self, cur: usize, cancelled: bool, what: &str) {
        let (definite, handing_over) = self.visible(cur);
        if cancelled && !definite && !handing_over {
            self.violation(format!(
                "{what} in scope {cur} returned Cancelled, but no cancelled scope is visible from it"
            ));
        }
        if !cancelled && definite {
            self.violation(format!(
                "{what} in scope {cur} returned Ok although a cancelled scope is visible from it"
            ));
        }
    }

    /// Whether a cancellation is visible from scope `cur` now, for certain;
    /// and whether one may be (a failure of a child handed over in this
    /// instant).
    fn visible(&self, cur: usize) -> (bool, bool) {
        let now = hatchery::now();
        // A failure cancels its nursery's scope synchronously, as soon as
        // the nursery sees the task end (before any other task runs): it
        // counts as definitely as an explicit cancel.
        let (mut definite, mut handing_over) = (false, false);
        let mut at = Some(cur);
        while let Some(index) = at {
            let scope = &self.scopes[index];
            definite |= scope.explicit || scope.failed || scope.deadline.is_some_and(|d| d <= now);
            definite |= scope.failed_pending.is_some_and(|t| t < now);
            handing_over |= scope.failed_pending.is_some();
            if scope.shield {
                break;
            }
            at = scope.parent;
        }
        (definite, handing_over)
    }

    /// Every task waits and no timer is pending: cancels the scope of each
    /// `sleep_forever` wait in progress (it must not have been woken by a
    /// cancellation visible from it: that would be a lost wakeup). False
    /// if there is none (a stall).
    fn watchdog(&mut self) -> bool {
        let now = hatchery::now();
        let waits = self.forever.clone();
        for &id in &waits {
            if self.visible(id).0 {
                self.violation(format!(
                    "sleep_forever in scope {id} still waits, though a cancellation is \
                     visible from it (a lost wakeup)"
                ));
                return false;
            }
        }
        for &id in &waits {
            let scope = &mut self.scopes[id];
            scope.explicit = true;
            scope.explicit_at.get_or_insert(now);
            scope.handle.cancel();
        }
        !waits.is_empty()
    }

    /// A wait that began at `began` in scope `cur` ended with `Cancelled`
    /// now: it must have woken as soon as a visible cancellation appeared
    /// (virtual time moves only while every task waits, so a wake that came
    /// late is a lost wakeup that a later timer papered over).
    fn check_prompt(&mut self, cur: usize, began: Instant, what: &str) {
        let now = hatchery::now();
        let mut cause: Option<Instant> = None;
        let mut visible_since = began;
        let mut at = Some(cur);
        while let Some(index) = at {
            let scope = &self.scopes[index];
            visible_since = visible_since.max(scope.shield_set_at);
            let deadline = scope.deadline.map(|d| d.max(scope.deadline_set_at));
            for time in [
                scope.explicit_at,
                scope.failed_at,
                scope.failed_pending,
                deadline,
            ]
            .into_iter()
            .flatten()
            {
                cause = Some(cause.map_or(time, |c| c.min(time)));
            }
            if scope.shield {
                break;
            }
            at = scope.parent;
        }
        if let Some(cause) = cause {
            let due = cause.max(visible_since);
            if now > due {
                self.violation(format!(
                    "{what} in scope {cur} was cancelled {:?} late (a lost wakeup)",
                    now - due
                ));
            }
        }
    }

    /// A foreign await that began at `began` in scope `cur` finished now: no
    /// cancellation may have been visible from it before now (its owner
    /// would have dropped it then).
    fn check_not_overdue(&mut self, cur: usize, began: Instant) {
        let now = hatchery::now();
        let mut visible_since = began;
        let mut at = Some(cur);
        while let Some(index) = at {
            let scope = &self.scopes[index];
            visible_since = visible_since.max(scope.shield_set_at);
            let deadline = scope.deadline.map(|d| d.max(scope.deadline_set_at));
            let causes = [
                scope.explicit_at,
                scope.failed_at,
                scope.failed_pending.map(|t| t + Duration::from_nanos(1)),
                deadline,
            ];
            if let Some(due) = causes.into_iter().flatten().min() {
                let due = due.max(visible_since);
                if due < now {
                    self.violation(format!(
                        "a foreign await in scope {cur} finished at {:?}, though a \
                         cancellation was visible from it since {:?} (it should have been \
                         dropped then)",
                        now - began,
                        due - began
                    ));
                    return;
                }
            }
            if scope.shield {
                break;
            }
            at = scope.parent;
        }
    }

    /// A task returned: record its error in its nursery.
    fn finish(&mut self, task: &Task, result: &Result<(), Fault>) {
        task.completed.set(true);
        if !task.attached.get() {
            return; // the error goes to the caller of start()
        }
        let nursery = &mut self.nurseries[task.nursery];
        // A failure cancels the nursery; a cancellation does not.
        if let Err(Fault::Code(code)) = result {
            nursery.raised.push(*code);
            let scope = nursery.scope;
            self.fail_task(task, scope);
        }
    }

    /// A task failed (or panicked): its nursery's scope is cancelled now,
    /// or, for a child handed over in this very poll, by the end of the
    /// nursery's poll.
    fn fail_task(&mut self, task: &Task, scope: usize) {
        if task.handing_over.get() {
            let pending = &mut self.scopes[scope].failed_pending;
            pending.get_or_insert_with(hatchery::now);
        } else {
            self.fail(scope);
        }
    }

    fn fail(&mut self, scope: usize) {
        let scope = &mut self.scopes[scope];
        scope.failed = true;
        scope.failed_at.get_or_insert_with(hatchery::now);
    }

    /// A task panics (or passes a panic on): the nursery that will catch it.
    fn panicking(&mut self, task: &Rc<Task>, id: u32) {
        let mut at = Rc::clone(task);
        loop {
            at.panicked.set(true);
            if at.attached.get() {
                let nursery = &mut self.nurseries[at.nursery];
                nursery.panics.push(id);
                let scope = nursery.scope;
                self.fail_task(&at, scope);
                return;
            }
            let Some(caller) = at.caller.clone() else {
                return;
            };
            at = caller;
        }
    }

    /// Checks a snapshot of the tree: no task twice; every spawned task that
    /// has run and has not ended (nor its nursery been dropped) is there.
    fn check_report(&mut self, report: &hatchery::Report) {
        let mut names: Vec<&str> = report
            .tasks()
            .iter()
            .filter_map(|task| task.info().name())
            .filter(|name| name.starts_with('t'))
            .collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        if names.len() != before {
            self.violation(format!(
                "Report::capture() listed a task twice ({before} entries, {} names)",
                names.len()
            ));
        }
        let missing: Vec<&str> = self
            .spawned
            .iter()
            .filter(|(_, task)| {
                task.ran.get()
                    && !task.gone.get()
                    && !task.completed.get()
                    && !task.panicked.get()
                    && !task
                        .ancestors
                        .borrow()
                        .iter()
                        .any(|&n| self.nurseries[n].dropped)
            })
            .map(|(name, _)| name.as_str())
            .filter(|name| names.binary_search(name).is_err())
            .collect();
        if !missing.is_empty() {
            let missing = format!("{missing:?}");
            self.violation(format!("Report::capture() missed the live tasks {missing}"));
        }
    }

    /// Everything in nursery `index` and the nurseries inside it is gone.
    fn check_nothing_alive_in(&mut self, index: usize, why: &str) {
        let alive: Vec<usize> = (0..self.nurseries.len())
            .filter(|&n| n == index || self.nurseries[n].ancestors.contains(&index))
            .filter(|&n| self.nurseries[n].alive > 0)
            .collect();
        if !alive.is_empty() {
            self.violation(format!(
                "nursery {index} {why} while tasks of {alive:?} were alive"
            ));
        }
    }
}

/// Counts a task alive while its future exists; checks how it ended.
struct Alive {
    world: W,
    task: Rc<Task>,
}

impl Alive {
    fn new(world: &W, task: &Rc<Task>) -> Self {
        world.borrow_mut().nurseries[task.nursery].alive += 1;
        Alive {
            world: Rc::clone(world),
            task: Rc::clone(task),
        }
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.task.gone.set(true);
        let mut world = self.world.borrow_mut();
        world.nurseries[self.task.nursery].alive -= 1;
        let task = &self.task;
        if !task.completed.get() && !task.panicked.get() {
            let dropped = task
                .ancestors
                .borrow()
                .iter()
                .any(|&n| world.nurseries[n].dropped);
            // Dropped at a foreign await (which checked, in its own drop,
            // that a cancellation was visible and had just appeared), or
            // abandoned by a `start()` whose handle it dropped (checked
            // where that `start()` panics).
            let foreign = task.foreign.get() > 0 || task.foreign_dropped.get();
            if !dropped && !foreign && !task.start_dropped.get() {
                world.violation(format!(
                    "a task of nursery {} was dropped before it finished, though no nursery \
                     around it was dropped early (its cleanup did not run)",
                    task.nursery
                ));
            }
        }
    }
}

// ------------------------------------------------------------- interpreter

type Fut<'n> = Pin<Box<dyn Future<Output = Result<(), Fault>> + 'n>>;

#[derive(Clone)]
struct At<'n> {
    world: W,
    task: Rc<Task>,
    nursery: LocalNursery<'n, Fault>,
    nid: usize,
    scope: usize,
    /// The model's drop domains around this point of the task (the arms of
    /// combinators it is in): a hard cancel of a nested nursery when an arm
    /// is dropped.
    domains: Rc<Vec<usize>>,
    /// False in the arms of a `FuturesUnordered` (or `join_all` over more
    /// than 30 futures): it leaks the arms after the first whose `Drop`
    /// panics (not hatchery's doing), so `Bomb` is left out there.
    bombs: bool,
}

impl At<'_> {
    /// The nurseries (real or drop domains) whose drop may drop what runs
    /// here unfinished.
    fn droppable(&self) -> Vec<usize> {
        let mut all = self.task.ancestors.borrow().clone();
        all.extend(self.domains.iter());
        all
    }

    /// The same point inside a new drop domain (a combinator's arm).
    fn in_domain(&self, domain: usize) -> Self {
        let mut domains = (*self.domains).clone();
        domains.push(domain);
        At {
            domains: Rc::new(domains),
            ..self.clone()
        }
    }
}

fn exec<'n>(at: At<'n>, block: Block) -> Fut<'n> {
    Box::pin(async move {
        // Declared first, dropped last: the bombs go off as the block ends.
        let mut bombs = Vec::new();
        for step in block.iter() {
            let w = &at.world;
            match step {
                Step::Checkpoint => {
                    let out = checkpoint().await;
                    w.borrow_mut().check(at.scope, out.is_err(), "a checkpoint");
                    out?;
                }
                Step::Sleep(t) => {
                    let began = hatchery::now();
                    let out = sleep(ticks(*t)).await;
                    let mut world = w.borrow_mut();
                    world.check(at.scope, out.is_err(), "a sleep");
                    if out.is_err() {
                        world.check_prompt(at.scope, began, "a sleep");
                    }
                    drop(world);
                    out?;
                }
                Step::Foreign(t) => {
                    let began = hatchery::now();
                    let mut wait = ForeignAwait::new(&at, began);
                    ForeignTimer::new(began + ticks(*t)).await;
                    wait.finished();
                    if at.domains.is_empty() {
                        w.borrow_mut().check_not_overdue(at.scope, began);
                    }
                }
                Step::Guard {
                    body,
                    cleanup,
                    shield,
                } => {
                    let out = exec(at.clone(), Rc::clone(body)).await;
                    if out == Err(Fault::Cancelled) {
                        clean_up(&at, cleanup, *shield).await?;
                    }
                    out?;
                }
                Step::Join {
                    unordered,
                    count,
                    arms,
                } => {
                    let domains: Vec<usize> = {
                        let mut world = w.borrow_mut();
                        (0..*count).map(|_| world.new_domain()).collect()
                    };
                    let futures: Vec<Arm<'n>> = domains
                        .iter()
                        .enumerate()
                        .map(|(i, &domain)| {
                            let arm = At {
                                // Nor in the arms of a `join_all` inside such an arm.
                                bombs: at.bombs && !(*unordered || *count > 30),
                                ..at.in_domain(domain)
                            };
                            let fut = exec(arm, Rc::clone(&arms[i % arms.len()]));
                            Arm::new(w, domain, fut)
                        })
                        .collect();
                    let outs: Vec<Result<(), Fault>> = if *unordered {
                        use futures::StreamExt;
                        futures
                            .into_iter()
                            .collect::<futures::stream::FuturesUnordered<_>>()
                            .collect()
                            .await
                    } else {
                        futures::future::join_all(futures).await
                    };
                    join_outcome(outs)?;
                }
                Step::Select(a, b) => {
                    let (da, db) = {
                        let mut world = w.borrow_mut();
                        (world.new_domain(), world.new_domain())
                    };
                    let fa = Arm::new(w, da, exec(at.in_domain(da), Rc::clone(a)));
                    let fb = Arm::new(w, db, exec(at.in_domain(db), Rc::clone(b)));
                    let (out, loser) = futures::future::select(fa, fb).await.factor_first();
                    match loser {
                        futures::future::Either::Left(arm)
                        | futures::future::Either::Right(arm) => {
                            arm.abandon();
                        }
                    }
                    out?;
                }
                Step::Race(which, body) => {
                    let domain = w.borrow_mut().new_domain();
                    let arm = Arm::new(w, domain, exec(at.in_domain(domain), Rc::clone(body)));
                    let which = *which;
                    let wait = pin!(async move {
                        if which {
                            hatchery::cancelled().await
                        } else {
                            hatchery::sleep_forever().await
                        }
                    });
                    let began = hatchery::now();
                    match futures::future::select(wait, arm).await {
                        futures::future::Either::Left((Err(cancel), arm)) => {
                            arm.abandon();
                            let mut world = w.borrow_mut();
                            world.check(at.scope, true, "cancelled() racing a block");
                            world.check_prompt(at.scope, began, "cancelled() racing a block");
                            drop(world);
                            return Err(cancel.into());
                        }
                        futures::future::Either::Right((out, _)) => out?,
                    }
                }
                Step::StartNoCall {
                    before,
                    after,
                    early,
                } => start_no_call(&at, Rc::clone(before), Rc::clone(after), *early).await?,
                Step::Bomb if !at.bombs => {}
                Step::Bomb => bombs.push(Bomb {
                    world: Rc::clone(w),
                    task: Rc::clone(&at.task),
                    droppable: at.droppable(),
                }),
                Step::Many(count, body) => {
                    for _ in 0..*count {
                        spawn(&at, Rc::clone(body));
                    }
                }
                Step::Report => {
                    let running = blocking::running();
                    let report = hatchery::Report::capture();
                    let mut world = w.borrow_mut();
                    world.check_report(&report);
                    blocking::check_report(&mut world, &report, &running);
                }
                Step::Blocking(t, end) => blocking::spawn(&at, *t, *end),
                Step::Forever {
                    cleanup,
                    shield,
                    cancelled,
                } => {
                    let began = hatchery::now();
                    let scope = CancelScope::new();
                    let id = {
                        let mut world = w.borrow_mut();
                        let id = world.new_scope(scope.handle(), Some(at.scope), false, None);
                        world.forever.push(id);
                        world.forevers += 1;
                        id
                    };
                    let waiting = Waiting {
                        world: Rc::clone(w),
                        scope: id,
                    };
                    let which = *cancelled;
                    let world = Rc::clone(w);
                    let out = scope
                        .run_typed(async move {
                            let Err(cancel) = if which {
                                hatchery::cancelled().await
                            } else {
                                hatchery::sleep_forever().await
                            };
                            let mut world = world.borrow_mut();
                            world.check(id, true, "sleep_forever");
                            world.check_prompt(id, began, "sleep_forever");
                            Err::<(), Fault>(cancel.into())
                        })
                        .await;
                    drop(waiting);
                    {
                        // Caught by its own scope unless a cancellation
                        // from outside is visible to that scope.
                        let mut world = w.borrow_mut();
                        let (definite, maybe) = world.visible(at.scope);
                        let passes = !world.scopes[id].shield && definite;
                        let may_pass = !world.scopes[id].shield && maybe;
                        if out.is_err() != passes && !may_pass {
                            world.violation(format!(
                                "the scope {id} of sleep_forever returned {out:?}, but a \
                                 cancellation from outside is {}visible to it",
                                if passes { "" } else { "not " }
                            ));
                        }
                    }
                    if out.is_err() {
                        clean_up(&at, cleanup, *shield).await?;
                    }
                    out?;
                }
                Step::BombAfter => at.task.bomb_after.set(true),
                Step::Spawn(body) => spawn(&at, Rc::clone(body)),
                Step::Start { before, after } => {
                    start(&at, Rc::clone(before), Rc::clone(after)).await?;
                }
                Step::Nursery(body) => nested(&at, Rc::clone(body), None).await?,
                Step::DropNursery(t, body) => nested(&at, Rc::clone(body), Some(*t)).await?,
                Step::Scope {
                    deadline,
                    shield,
                    body,
                } => {
                    let deadline = deadline.map(|t| hatchery::now() + ticks(t));
                    let mut scope = CancelScope::new().shield(*shield);
                    if let Some(deadline) = deadline {
                        scope = scope.deadline(deadline);
                    }
                    let id =
                        w.borrow_mut()
                            .new_scope(scope.handle(), Some(at.scope), *shield, deadline);
                    let inner = At {
                        scope: id,
                        ..at.clone()
                    };
                    scope.run_typed(exec(inner, Rc::clone(body))).await?;
                }
                Step::Cancel(i) => {
                    let mut world = w.borrow_mut();
                    let Some(index) = world.pick(*i) else {
                        continue;
                    };
                    let scope = &mut world.scopes[index];
                    scope.explicit = true;
                    scope.explicit_at.get_or_insert_with(hatchery::now);
                    scope.handle.cancel();
                }
                Step::MoveDeadline(i, to) => {
                    let mut world = w.borrow_mut();
                    let Some(index) = world.pick(*i) else {
                        continue;
                    };
                    let now = hatchery::now();
                    let scope = &mut world.scopes[index];
                    // As in trio, an expiry is an event at its instant: moving
                    // a deadline that has passed leaves the scope cancelled.
                    if let Some(expired) = scope.deadline.filter(|&d| d <= now) {
                        scope.explicit = true;
                        let at = expired.max(scope.deadline_set_at);
                        scope.explicit_at = Some(scope.explicit_at.map_or(at, |e| e.min(at)));
                    }
                    scope.deadline = to.map(|t| now + ticks(t));
                    scope.deadline_set_at = now;
                    scope.handle.set_deadline(scope.deadline);
                }
                Step::ToggleShield(i) => {
                    let mut world = w.borrow_mut();
                    let Some(index) = world.pick(*i) else {
                        continue;
                    };
                    let scope = &mut world.scopes[index];
                    scope.shield = !scope.shield;
                    scope.shield_set_at = hatchery::now();
                    scope.handle.set_shield(scope.shield);
                }
                Step::Fail => {
                    let code = w.borrow_mut().fresh();
                    return Err(Fault::Code(code));
                }
                Step::Panic => {
                    let id = {
                        let mut world = w.borrow_mut();
                        let id = world.fresh();
                        world.panicking(&at.task, id);
                        id
                    };
                    std::panic::panic_any(PanicId(id));
                }
            }
        }
        Ok(())
    })
}

/// Cleanup after a `Cancelled`: runs `cleanup` (behind a shield of its own
/// if `shield`); `Err` only for a failure there, which replaces the
/// cancellation.
async fn clean_up(at: &At<'_>, cleanup: &Block, shield: bool) -> Result<(), Fault> {
    let cleaned = if shield {
        let scope = CancelScope::new().shield(true);
        let id = at
            .world
            .borrow_mut()
            .new_scope(scope.handle(), Some(at.scope), true, None);
        let inner = At {
            scope: id,
            ..at.clone()
        };
        scope
            .run_typed(exec(inner, Rc::clone(cleanup)))
            .await
            .map(drop)
    } else {
        exec(at.clone(), Rc::clone(cleanup)).await
    };
    match cleaned {
        Err(Fault::Code(code)) => Err(Fault::Code(code)),
        _ => Ok(()),
    }
}

/// A `sleep_forever` wait in progress (for the driver's watchdog).
struct Waiting {
    world: W,
    scope: usize,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut world = self.world.borrow_mut();
        world.forever.retain(|&id| id != self.scope);
    }
}

/// The task's result from its combinator's arms: the first failure, else a
/// cancellation, else `Ok`.
fn join_outcome(outs: Vec<Result<(), Fault>>) -> Result<(), Fault> {
    let mut cancelled = false;
    for out in outs {
        match out {
            Err(Fault::Code(code)) => return Err(Fault::Code(code)),
            Err(Fault::Cancelled) => cancelled = true,
            Ok(()) => {}
        }
    }
    if cancelled {
        Err(Fault::Cancelled)
    } else {
        Ok(())
    }
}

/// A combinator's arm: dropped unfinished, it marks its drop domain dropped
/// before its future goes (a select's loser, or every arm of a combinator
/// that a panic unwinds through).
struct Arm<'n> {
    world: W,
    domain: usize,
    future: Option<Fut<'n>>,
}

impl<'n> Arm<'n> {
    fn new(world: &W, domain: usize, future: Fut<'n>) -> Self {
        Arm {
            world: Rc::clone(world),
            domain,
            future: Some(future),
        }
    }
}

impl Future for Arm<'_> {
    type Output = Result<(), Fault>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(future) = self.future.as_mut() else {
            panic!("an arm was polled after it finished");
        };
        let out = std::task::ready!(future.as_mut().poll(cx));
        self.future = None;
        Poll::Ready(out)
    }
}

impl Arm<'_> {
    /// Drops the arm unfinished (a select's loser).
    fn abandon(mut self) {
        self.world.borrow_mut().nurseries[self.domain].dropped = true;
        self.future = None;
    }
}

impl Drop for Arm<'_> {
    fn drop(&mut self) {
        // A panic unwinding through the combinator drops every arm; a drop
        // of the whole task is judged by what it waited in.
        if self.future.is_some() && std::thread::panicking() {
            self.world.borrow_mut().nurseries[self.domain].dropped = true;
            self.future = None;
        }
    }
}

/// A foreign await in progress: if it is dropped unfinished, that was for
/// a cancellation visible from its scope, as soon as it appeared (or a
/// hard cancel of something around it, or a panic unwinding its task).
struct ForeignAwait {
    world: W,
    task: Rc<Task>,
    scope: usize,
    began: Instant,
    droppable: Vec<usize>,
    done: bool,
    /// In a combinator's arm: the task is kept while a sibling arm is
    /// parked at a hatchery await, so the drop may come later than the
    /// cancellation, and the await may even finish after it.
    in_combinator: bool,
}

impl ForeignAwait {
    fn new(at: &At<'_>, began: Instant) -> Self {
        at.task.foreign.set(at.task.foreign.get() + 1);
        ForeignAwait {
            world: Rc::clone(&at.world),
            task: Rc::clone(&at.task),
            scope: at.scope,
            began,
            droppable: at.droppable(),
            done: false,
            in_combinator: !at.domains.is_empty(),
        }
    }

    fn finished(&mut self) {
        self.done = true;
    }
}

impl Drop for ForeignAwait {
    fn drop(&mut self) {
        self.task.foreign.set(self.task.foreign.get() - 1);
        if self.done || self.task.panicked.get() {
            return;
        }
        let mut world = self.world.borrow_mut();
        if self.droppable.iter().any(|&n| world.nurseries[n].dropped) {
            return;
        }
        self.task.foreign_dropped.set(true);
        world.check(self.scope, true, "a foreign await that was dropped");
        if !self.in_combinator {
            world.check_prompt(self.scope, self.began, "a foreign await that was dropped");
        }
    }
}

/// A guard whose `Drop` panics (as the program's own panic).
struct Bomb {
    world: W,
    task: Rc<Task>,
    droppable: Vec<usize>,
}

impl Drop for Bomb {
    fn drop(&mut self) {
        // A second panic while unwinding would abort; a hard cancel's drop
        // is not the task's doing.
        if std::thread::panicking() {
            return;
        }
        let id = {
            let mut world = self.world.borrow_mut();
            if self.droppable.iter().any(|&n| world.nurseries[n].dropped) {
                return;
            }
            let id = world.fresh();
            world.panicking(&self.task, id);
            id
        };
        std::panic::panic_any(PanicId(id));
    }
}

fn spawn(at: &At<'_>, body: Block) {
    let w = &at.world;
    let (task, scope) = {
        let world = w.borrow();
        let task = Task::new(at.nid, None, world.within(at.nid));
        (task, world.nurseries[at.nid].scope)
    };
    let alive = Alive::new(w, &task);
    let bombed = Rc::clone(&task);
    let name = {
        let mut world = w.borrow_mut();
        let name = format!("t{}", world.fresh());
        world.spawned.push((name.clone(), Rc::clone(&task)));
        name
    };
    // The child belongs to the nursery, not to the arm that spawned it.
    let child = At {
        task: Rc::clone(&task),
        scope,
        domains: Rc::default(),
        bombs: true,
        ..at.clone()
    };
    let future: Fut<'_> = Box::pin(async move {
        let _alive = alive;
        task.ran.set(true);
        let world = Rc::clone(&child.world);
        let out = exec(child, body).await;
        world.borrow_mut().finish(&task, &out);
        out
    });
    at.nursery.named(name).spawn(AfterBomb {
        world: Rc::clone(w),
        task: bombed,
        future,
        returned: false,
    });
}

/// A spawned child's future that panics in its `Drop`, after it returned,
/// if its program asked for it (`BombAfter`): the nursery takes that for
/// the child's panic (while its siblings clean up).
struct AfterBomb<'n> {
    world: W,
    task: Rc<Task>,
    future: Fut<'n>,
    returned: bool,
}

impl Future for AfterBomb<'_> {
    type Output = Result<(), Fault>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let out = std::task::ready!(self.future.as_mut().poll(cx));
        self.returned = true;
        Poll::Ready(out)
    }
}

impl Drop for AfterBomb<'_> {
    fn drop(&mut self) {
        if !self.returned || !self.task.bomb_after.get() || std::thread::panicking() {
            return;
        }
        let id = {
            let mut world = self.world.borrow_mut();
            let id = world.fresh();
            world.panicking(&self.task, id);
            id
        };
        std::panic::panic_any(PanicId(id));
    }
}

async fn start(at: &At<'_>, before: Block, after: Block) -> Result<(), Fault> {
    let w = &at.world;
    let (task, nursery_scope) = {
        let world = w.borrow();
        let mut ancestors = world.within(at.nid);
        ancestors.extend(at.droppable());
        let task = Task::new(at.nid, Some(Rc::clone(&at.task)), ancestors);
        (task, world.nurseries[at.nid].scope)
    };
    let alive = Alive::new(w, &task);
    // Before `started`, the child runs in the caller's scope.
    let starting = At {
        task: Rc::clone(&task),
        ..at.clone()
    };
    let hand_over = Rc::clone(&task);
    at.nursery
        .start(move |status: Started<()>| {
            let child = async move {
                let _alive = alive;
                let world = Rc::clone(&starting.world);
                let out = async {
                    exec(starting.clone(), before).await?;
                    // As in trio, a child whose caller is cancelled when it
                    // calls `started` stays under `start()`.
                    let stays = hatchery::check_cancelled().is_err();
                    starting
                        .world
                        .borrow_mut()
                        .check(starting.scope, stays, "started()");
                    status.started(());
                    if stays {
                        return exec(starting, after).await;
                    }
                    task.attached.set(true);
                    task.handing_over.set(true);
                    let within = starting.world.borrow().within(starting.nid);
                    *task.ancestors.borrow_mut() = within;
                    // Handed over, it belongs to the nursery, no longer to
                    // the combinator arm that started it.
                    let running = At {
                        scope: nursery_scope,
                        domains: Rc::default(),
                        ..starting
                    };
                    exec(running, after).await
                }
                .await;
                world.borrow_mut().finish(&task, &out);
                out
            };
            HandOver {
                task: hand_over,
                future: Box::pin(child),
            }
        })
        .await
}

/// A starting child's future: the hand-over poll ends when it returns
/// `Pending`.
struct HandOver<'n> {
    task: Rc<Task>,
    future: Fut<'n>,
}

impl Future for HandOver<'_> {
    type Output = Result<(), Fault>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let out = self.future.as_mut().poll(cx);
        if out.is_pending() {
            self.task.handing_over.set(false);
        }
        out
    }
}

/// A `start()` whose child never calls `started` (trio's rule, `start()`'s
/// invariant 4): dropping the handle while the child is not cancelled ends
/// `start()` at once with a panic (the child is dropped); a cancelled child
/// is waited for, and `start()` returns its error or `Cancelled`; a child
/// that returns `Ok` without calling `started` makes `start()` panic unless
/// it is cancelled.
async fn start_no_call(at: &At<'_>, before: Block, after: Block, early: bool) -> Result<(), Fault> {
    let w = &at.world;
    let task = {
        let world = w.borrow();
        let mut ancestors = world.within(at.nid);
        ancestors.extend(at.droppable());
        Task::new(at.nid, Some(Rc::clone(&at.task)), ancestors)
    };
    let alive = Alive::new(w, &task);
    let starting = At {
        task: Rc::clone(&task),
        ..at.clone()
    };
    let child = Rc::clone(&task);
    let future = at.nursery.start(move |status: Started<()>| async move {
        let _alive = alive;
        let world = Rc::clone(&starting.world);
        let scope = starting.scope;
        let out = async {
            exec(starting.clone(), before).await?;
            if early {
                let cancelled = hatchery::check_cancelled().is_err();
                world
                    .borrow_mut()
                    .check(scope, cancelled, "dropping Started");
                child.start_dropped.set(true);
                drop(status);
                if !cancelled {
                    // start() must drop this child before it is polled again.
                    child.expect.set(Expect::DroppedPanic);
                    return PolledOnce::default().await;
                }
                exec(starting.clone(), after).await?;
            } else {
                exec(starting.clone(), after).await?;
                drop(status);
            }
            let cancelled = hatchery::check_cancelled().is_err();
            world
                .borrow_mut()
                .check(scope, cancelled, "returning without started()");
            if !cancelled {
                child.expect.set(Expect::ReturnedPanic);
            }
            Ok(())
        }
        .await;
        world.borrow_mut().finish(&child, &out);
        out
    });
    let out = AssertUnwindSafe(future).catch_unwind().await;
    let expect = task.expect.get();
    match out {
        Ok(out) => {
            if expect != Expect::Usual {
                w.borrow_mut().violation(format!(
                    "start() returned {out:?}, but its child never called started() and                      {expect:?} was due"
                ));
            }
            out
        }
        Err(payload) if payload.is::<PanicId>() => resume_unwind(payload),
        Err(payload) => {
            let text = describe(&*payload);
            let due = match expect {
                Expect::DroppedPanic => "dropped its Started handle",
                Expect::ReturnedPanic => "returned without calling",
                Expect::Usual => "(no panic was due)",
            };
            let id = {
                let mut world = w.borrow_mut();
                if !text.contains(due) {
                    world.violation(format!(
                        "start() panicked with {text:?}, but {due:?} was due"
                    ));
                }
                let id = world.fresh();
                world.panicking(&at.task, id);
                id
            };
            std::panic::panic_any(PanicId(id))
        }
    }
}

/// Pending forever, and a violation if it is polled a second time.
#[derive(Default)]
struct PolledOnce {
    polled: bool,
}

impl Future for PolledOnce {
    type Output = Result<(), Fault>;

    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        assert!(
            !self.polled,
            "start() polled its child again after it dropped its Started handle"
        );
        self.polled = true;
        Poll::Pending
    }
}

async fn nested(at: &At<'_>, body: Block, drop_after: Option<u8>) -> Result<(), Fault> {
    let w = &at.world;
    let nid = {
        let mut world = w.borrow_mut();
        let mut ancestors = world.within(at.nid);
        ancestors.extend(at.droppable());
        ancestors.sort_unstable();
        ancestors.dedup();
        world.new_nursery(usize::MAX, ancestors)
    };
    let outer = at.clone();
    let future = local_nursery(move |n: LocalNursery<'_, Fault>| {
        let w = Rc::clone(&outer.world);
        let scope = {
            let mut world = w.borrow_mut();
            let scope = world.new_scope(n.cancel_scope(), Some(outer.scope), false, None);
            world.nurseries[nid].scope = scope;
            scope
        };
        let task = Task::new(nid, None, w.borrow().within(nid));
        let alive = Alive::new(&w, &task);
        let inner = At {
            world: Rc::clone(&w),
            task: Rc::clone(&task),
            nursery: n,
            nid,
            scope,
            domains: Rc::default(),
            bombs: true,
        };
        async move {
            let _alive = alive;
            let out = exec(inner, body).await;
            w.borrow_mut().finish(&task, &out);
            out
        }
    });
    let mut future = Some(Box::pin(AssertUnwindSafe(future).catch_unwind()));
    let outcome = match drop_after {
        None => Some(future.as_mut().expect("present").await),
        Some(t) => {
            let mut timer = pin!(sleep(ticks(t)));
            let raced = std::future::poll_fn(|cx| {
                if let Some(Poll::Ready(out)) = future.as_mut().map(|f| f.as_mut().poll(cx)) {
                    return Poll::Ready(Ok(out));
                }
                timer.as_mut().poll(cx).map(Err)
            })
            .await;
            match raced {
                Ok(out) => Some(out),
                Err(slept) => {
                    w.borrow_mut().nurseries[nid].dropped = true;
                    future = None;
                    let mut world = w.borrow_mut();
                    world.check_nothing_alive_in(nid, "was dropped, but after the drop");
                    world.check(at.scope, slept.is_err(), "the sleep racing a nursery");
                    drop(world);
                    slept?;
                    None
                }
            }
        }
    };
    drop(future);
    let Some(outcome) = outcome else {
        return Ok(());
    };
    let mut world = w.borrow_mut();
    world.check_nothing_alive_in(nid, "returned");
    let nursery = &mut world.nurseries[nid];
    let panics = nursery.panics.clone();
    let mut raised = nursery.raised.clone();
    match outcome {
        Err(payload) => {
            nursery.resumed += 1;
            let resumed = nursery.resumed;
            let id = payload.downcast_ref::<PanicId>().map(|id| id.0);
            match id {
                Some(id) if panics.contains(&id) => {}
                _ => world.violation(format!(
                    "nursery {nid} panicked with {}, not one of the panics raised in it {panics:?}",
                    describe(&*payload)
                )),
            }
            if resumed > 1 {
                world.violation(format!("nursery {nid} resumed a panic {resumed} times"));
            }
            world.panicking(&at.task, id.unwrap_or(0));
            drop(world);
            resume_unwind(payload)
        }
        Ok(result) => {
            if !panics.is_empty() {
                world.violation(format!(
                    "nursery {nid} returned although {panics:?} panicked"
                ));
            }
            let mut got = match &result {
                Ok(_) => Vec::new(),
                Err(error) => codes(&mut world, nid, error),
            };
            got.sort_unstable();
            raised.sort_unstable();
            if got != raised {
                world.violation(format!(
                    "nursery {nid} returned the errors {got:?}, but its tasks raised {raised:?}"
                ));
            }
            match result {
                Ok(_) => Ok(()),
                Err(_) if got.is_empty() => Err(Fault::Cancelled),
                Err(_) => Err(Fault::Code(world.fresh())),
            }
        }
    }
}

fn codes(world: &mut World, nid: usize, error: &NurseryError<Fault>) -> Vec<u32> {
    let mut codes = Vec::new();
    for fault in error.errors() {
        match fault {
            Fault::Code(code) => codes.push(*code),
            Fault::Cancelled => {
                world.violation(format!("nursery {nid} listed Cancelled as a failure"));
            }
        }
    }
    codes
}

fn describe(payload: &(dyn Any + Send)) -> String {
    if let Some(id) = payload.downcast_ref::<PanicId>() {
        format!("{id:?}")
    } else if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a payload of an unknown type".to_string()
    }
}

// ----------------------------------------------------------- foreign timer

thread_local! {
    /// The pending foreign timers: woken by the driver, not by hatchery.
    static FOREIGN: RefCell<std::collections::BTreeMap<(Instant, u64), Waker>> =
        RefCell::default();
    static FOREIGN_IDS: Cell<u64> = const { Cell::new(0) };
}

/// A timer on the virtual clock that knows nothing of hatchery: it never
/// parks its task at a hatchery await, so its owner drops it on a cancel.
struct ForeignTimer {
    at: Instant,
    id: u64,
}

impl ForeignTimer {
    fn new(at: Instant) -> Self {
        let id = FOREIGN_IDS.with(|ids| {
            ids.set(ids.get() + 1);
            ids.get()
        });
        ForeignTimer { at, id }
    }
}

impl Future for ForeignTimer {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let key = (self.at, self.id);
        if hatchery::now() >= self.at {
            FOREIGN.with(|timers| timers.borrow_mut().remove(&key));
            return Poll::Ready(());
        }
        FOREIGN.with(|timers| timers.borrow_mut().insert(key, cx.waker().clone()));
        Poll::Pending
    }
}

impl Drop for ForeignTimer {
    fn drop(&mut self) {
        let key = (self.at, self.id);
        FOREIGN.with(|timers| timers.borrow_mut().remove(&key));
    }
}

/// The earliest foreign timer, if any.
fn next_foreign() -> Option<Instant> {
    FOREIGN.with(|timers| timers.borrow().keys().next().map(|&(at, _)| at))
}

/// Wakes the foreign timers that are due.
fn wake_foreign() {
    let now = hatchery::now();
    let due: Vec<Waker> = FOREIGN.with(|timers| {
        let mut timers = timers.borrow_mut();
        let later = timers.split_off(&(now, u64::MAX));
        std::mem::replace(&mut *timers, later)
            .into_values()
            .collect()
    });
    for waker in due {
        waker.wake();
    }
}

// ------------------------------------------------------------------ driver

/// What a run did, for statistics.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub scopes: usize,
    pub nurseries: usize,
    /// Blocking closures spawned, `sleep_forever` waits entered.
    pub blocking: usize,
    pub forevers: usize,
    pub polls: u64,
    pub panicked: bool,
}

const MAX_POLLS: u64 = 200_000;

struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
}

/// Runs `program` and checks it; `Err` describes every violation found.
pub fn run(program: &Block) -> Result<Stats, String> {
    quiet_program_panics();
    let before = testing::live();
    let clock = Arc::new(VirtualClock::new());
    let world: W = Rc::default();
    world.borrow_mut().clock = Some(Arc::clone(&clock));
    let stats = clock.enter(|| drive(&clock, &world, program));
    // Abandoned blocking work is told to return, and waited for.
    let ended = blocking::shutdown();
    let stats = stats?;
    ended?;
    world.borrow_mut().clock = None;
    let world = Rc::try_unwrap(world)
        .map_err(|_| "the program's model outlived the program".to_string())?
        .into_inner();
    if !world.violations.is_empty() {
        return Err(world.violations.join("\n"));
    }
    let (scopes, nurseries) = (world.scopes.len(), world.nurseries.len());
    let (blocking, forevers) = (world.blocking, world.forevers);
    drop(world); // its handles keep the scopes alive
    let mut after = testing::live();
    if blocking > 0 {
        // Blocking work dropped unrun (its nursery dropped first) drops its
        // cancel handle on a thread of the pool, when that thread gets to
        // it: wait for it, a while.
        let until = Instant::now() + Duration::from_secs(2);
        while after != before && Instant::now() < until {
            std::thread::sleep(Duration::from_micros(50));
            after = testing::live();
        }
    }
    if after != before {
        return Err(format!(
            "left alive after the run: {after:?} (before: {before:?})"
        ));
    }
    Ok(Stats {
        scopes,
        nurseries,
        blocking,
        forevers,
        ..stats
    })
}

fn drive(clock: &VirtualClock, world: &W, program: &Block) -> Result<Stats, String> {
    let outer = CancelScope::new();
    let root_task = Task::new(0, None, Vec::new());
    {
        let mut w = world.borrow_mut();
        let scope = w.new_scope(outer.handle(), None, false, None);
        w.new_nursery(scope, Vec::new());
    }
    let program = Rc::clone(program);
    let world2 = Rc::clone(world);
    let top = outer.run_typed(async move {
        // A nursery whose body is the program; the outer scope gives the
        // program a scope 0 to cancel.
        local_nursery(|n: LocalNursery<'_, Fault>| async move {
            let at = At {
                world: world2,
                task: root_task,
                nursery: n,
                nid: 0,
                scope: 0,
                domains: Rc::default(),
                bombs: true,
            };
            nested(&at, program, None).await
        })
        .await
        .map(drop)
        .map_err(|_| Fault::Cancelled)
    });
    let mut top = pin!(AssertUnwindSafe(top).catch_unwind());
    let flag = Arc::new(Flag(AtomicBool::new(true)));
    let waker = Waker::from(Arc::clone(&flag));
    let mut cx = Context::from_waker(&waker);
    let mut stats = Stats::default();
    loop {
        if flag.0.swap(false, Ordering::AcqRel) {
            stats.polls += 1;
            if stats.polls > MAX_POLLS {
                return Err(format!("no end after {MAX_POLLS} polls (a livelock?)"));
            }
            match top.as_mut().poll(&mut cx) {
                Poll::Ready(Ok(_)) => return Ok(stats),
                Poll::Ready(Err(payload)) => {
                    let panics = world.borrow().nurseries[0].panics.clone();
                    let id = payload.downcast_ref::<PanicId>().map(|id| id.0);
                    if !id.is_some_and(|id| panics.contains(&id)) {
                        return Err(format!(
                            "the program panicked with {}, which it did not raise at the top \
                             (raised there: {panics:?})",
                            describe(&*payload)
                        ));
                    }
                    stats.panicked = true;
                    return Ok(stats);
                }
                Poll::Pending => continue,
            }
        }
        // Idle: blocking work looks at its cancel handle, or returns.
        if blocking::settle(world, &|| flag.0.load(Ordering::Acquire))? {
            continue;
        }
        let next = [
            clock.next_deadline(),
            next_foreign(),
            blocking::next_end(world),
        ]
        .into_iter()
        .flatten()
        .min();
        match next {
            Some(at) => {
                clock.advance_to(at);
                wake_foreign();
            }
            None if world.borrow_mut().watchdog() => {}
            None => {
                let mut why = "stalled: every task waits, no timer is pending, and nothing woke \
                               the program (a lost wakeup or a deadlock)"
                    .to_string();
                let world = world.borrow();
                let jobs = blocking::describe(&world);
                if !jobs.is_empty() {
                    why = format!("{why}\nblocking work: {jobs}");
                }
                for violation in &world.violations {
                    why = format!("{why}\n{violation}");
                }
                return Err(why);
            }
        }
    }
}
