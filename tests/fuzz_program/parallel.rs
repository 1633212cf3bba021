//! The `parallel` program: random trees of nurseries whose children run in
//! parallel (`spawn_on` an async-executor with four threads) or inline,
//! decoded from bytes and checked against the oracles that do not depend on
//! the interleaving. Shared by `fuzz/fuzz_targets/parallel.rs` and the
//! corpus replay (`tests/fuzz_corpus.rs`).
//!
//! Time is real (sleeps of a few milliseconds). Checked:
//!
//! * a nursery returns only once every task it owns has ended (their
//!   futures dropped);
//! * a nursery's error holds exactly the errors its tasks returned, whatever
//!   the interleaving; a panic comes out of the nursery it was raised in,
//!   with its payload, exactly once;
//! * a checkpoint or wait returns `Cancelled` only if a nursery around it
//!   (up to a shield) was cancelled or saw a failure (recorded before the
//!   cancel or the failure happens, so no interleaving makes this racy);
//!   a shielded block never sees `Cancelled`;
//! * the program ends within a wall-clock bound (no lost wakeup, no
//!   deadlock across threads);
//! * afterwards no task, scope or listener is left alive.

use std::panic::{AssertUnwindSafe, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbitrary::Unstructured;
use futures_lite::FutureExt;
use hatchery::{CancelScope, Nursery, checkpoint, sleep, testing, typed::nursery};

use super::{Fault, PanicId, quiet_program_panics};

pub type PBlock = Arc<[PStep]>;

#[derive(Debug, Clone)]
pub enum PStep {
    Checkpoint,
    /// A foreign yield (never consults hatchery).
    Yield,
    /// CPU work on the thread polling the task.
    Spin(u8),
    /// A real sleep of that many milliseconds (0 to 3).
    Sleep(u8),
    /// An inline child.
    Spawn(PBlock),
    /// A child on the multi-thread executor.
    Par(PBlock),
    Nursery(PBlock),
    /// A block behind a shield.
    Shielded(PBlock),
    Cancel,
    Fail,
    Panic,
}

const MAX_STEPS: u32 = 120;

pub fn decode(data: &[u8]) -> PBlock {
    let mut u = Unstructured::new(data);
    let mut budget = MAX_STEPS;
    block(&mut u, 0, &mut budget)
}

fn block(u: &mut Unstructured<'_>, depth: u32, budget: &mut u32) -> PBlock {
    let len = u.int_in_range(0..=6u32).unwrap_or(0);
    let mut steps = Vec::new();
    for _ in 0..len {
        if *budget == 0 || u.is_empty() {
            break;
        }
        *budget -= 1;
        let nested = depth < 4;
        let step = match u.int_in_range(0..=15u8).unwrap_or(0) {
            0 | 1 => PStep::Checkpoint,
            2 => PStep::Yield,
            3 => PStep::Spin(u.arbitrary().unwrap_or(0)),
            4 => PStep::Sleep(u.arbitrary::<u8>().unwrap_or(0) % 4),
            5 | 6 if nested => PStep::Spawn(block(u, depth + 1, budget)),
            7..=9 if nested => PStep::Par(block(u, depth + 1, budget)),
            10 if nested => PStep::Nursery(block(u, depth + 1, budget)),
            11 if nested => PStep::Shielded(block(u, depth + 1, budget)),
            12 => PStep::Cancel,
            13 => PStep::Fail,
            14 => PStep::Panic,
            _ => PStep::Checkpoint,
        };
        steps.push(step);
    }
    steps.into()
}

/// A nursery of the model.
#[derive(Default)]
struct PNursery {
    parent: Option<Arc<PNursery>>,
    /// Its scope was cancelled or one of its tasks failed (set before).
    cancelled: AtomicBool,
    alive: AtomicUsize,
    raised: Mutex<Vec<u32>>,
    panics: Mutex<Vec<u32>>,
}

#[derive(Default)]
struct PWorld {
    violations: Mutex<Vec<String>>,
    next: AtomicU32,
}

impl PWorld {
    fn violation(&self, what: String) {
        let mut violations = self.violations.lock().unwrap();
        if violations.len() < 20 {
            violations.push(what);
        }
    }

    fn fresh(&self) -> u32 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// Where a step runs: its nursery, and whether a shield is around it
/// within that nursery.
#[derive(Clone)]
struct PAt {
    world: Arc<PWorld>,
    nursery: Arc<PNursery>,
    handle: Nursery<'static, Fault>,
    shielded: bool,
    executor: Arc<async_executor::Executor<'static>>,
}

impl PAt {
    /// A `Cancelled` seen here: some nursery around (up to a shield) must
    /// have been cancelled.
    fn check_cancelled(&self, what: &str) {
        if self.shielded {
            self.world
                .violation(format!("{what} behind a shield returned Cancelled"));
            return;
        }
        let mut at = Some(&self.nursery);
        while let Some(n) = at {
            if n.cancelled.load(Ordering::SeqCst) {
                return;
            }
            at = n.parent.as_ref();
        }
        self.world.violation(format!(
            "{what} returned Cancelled, but no nursery around it was cancelled"
        ));
    }
}

/// Counts a task alive in its nursery while its future exists.
struct PAlive(Arc<PNursery>);

impl PAlive {
    fn new(nursery: &Arc<PNursery>) -> Self {
        nursery.alive.fetch_add(1, Ordering::SeqCst);
        PAlive(Arc::clone(nursery))
    }
}

impl Drop for PAlive {
    fn drop(&mut self) {
        self.0.alive.fetch_sub(1, Ordering::SeqCst);
    }
}

type PFut = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Fault>> + Send>>;

fn exec(at: PAt, block: PBlock) -> PFut {
    Box::pin(async move {
        for step in block.iter() {
            match step {
                PStep::Checkpoint => {
                    if checkpoint().await.is_err() {
                        at.check_cancelled("a checkpoint");
                        return Err(Fault::Cancelled);
                    }
                }
                PStep::Yield => futures_lite::future::yield_now().await,
                PStep::Spin(n) => {
                    let mut x = 0u64;
                    for i in 0..u64::from(*n) * 200 {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
                    }
                    std::hint::black_box(x);
                }
                PStep::Sleep(ms) => {
                    if sleep(Duration::from_millis(u64::from(*ms))).await.is_err() {
                        at.check_cancelled("a sleep");
                        return Err(Fault::Cancelled);
                    }
                }
                PStep::Spawn(body) => {
                    let child = task(&at, Arc::clone(body));
                    at.handle.spawn(child);
                }
                PStep::Par(body) => {
                    let child = task(&at, Arc::clone(body));
                    at.handle.spawn_on(&*at.executor, child);
                }
                PStep::Nursery(body) => nested(&at, Arc::clone(body)).await?,
                PStep::Shielded(body) => {
                    let inner = PAt {
                        shielded: true,
                        ..at.clone()
                    };
                    CancelScope::new()
                        .shield(true)
                        .run_typed(exec(inner, Arc::clone(body)))
                        .await?;
                }
                PStep::Cancel => {
                    at.nursery.cancelled.store(true, Ordering::SeqCst);
                    at.handle.cancel_scope().cancel();
                }
                PStep::Fail => {
                    let code = at.world.fresh();
                    // Recorded by `task` when it returns.
                    return Err(Fault::Code(code));
                }
                PStep::Panic => {
                    let id = at.world.fresh();
                    at.nursery.panics.lock().unwrap().push(id);
                    at.nursery.cancelled.store(true, Ordering::SeqCst);
                    std::panic::panic_any(PanicId(id));
                }
            }
        }
        Ok(())
    })
}

/// A child of `at`'s nursery running `body`; records its failure.
fn task(at: &PAt, body: PBlock) -> PFut {
    let alive = PAlive::new(&at.nursery);
    let at = PAt {
        shielded: false,
        ..at.clone()
    };
    Box::pin(async move {
        let _alive = alive;
        let nursery = Arc::clone(&at.nursery);
        let out = exec(at, body).await;
        if let Err(Fault::Code(code)) = &out {
            nursery.raised.lock().unwrap().push(*code);
            nursery.cancelled.store(true, Ordering::SeqCst);
        }
        out
    })
}

/// A nested nursery running `body`, then cancelling its own scope.
async fn nested(at: &PAt, body: PBlock) -> Result<(), Fault> {
    // A shield around the nursery cuts the chain of cancellations.
    let model = Arc::new(PNursery {
        parent: (!at.shielded).then(|| Arc::clone(&at.nursery)),
        ..PNursery::default()
    });
    let (world, executor) = (Arc::clone(&at.world), Arc::clone(&at.executor));
    let inner_model = Arc::clone(&model);
    let future = nursery(move |n: Nursery<'static, Fault>| {
        let inner = PAt {
            world,
            nursery: Arc::clone(&inner_model),
            handle: n.clone(),
            shielded: false,
            executor,
        };
        let alive = PAlive::new(&inner_model);
        async move {
            let _alive = alive;
            let out = exec(inner, body).await;
            if let Err(Fault::Code(code)) = &out {
                inner_model.raised.lock().unwrap().push(*code);
                inner_model.cancelled.store(true, Ordering::SeqCst);
            }
            // Every wait in the nursery ends.
            inner_model.cancelled.store(true, Ordering::SeqCst);
            n.cancel_scope().cancel();
            out
        }
    });
    let outcome = AssertUnwindSafe(future).catch_unwind().await;
    let alive = model.alive.load(Ordering::SeqCst);
    if alive != 0 {
        at.world.violation(format!(
            "a nursery returned while {alive} of its tasks lived"
        ));
    }
    let panics = model.panics.lock().unwrap().clone();
    match outcome {
        Err(payload) => {
            let id = payload.downcast_ref::<PanicId>().map(|id| id.0);
            if !id.is_some_and(|id| panics.contains(&id)) {
                at.world.violation(format!(
                    "a nursery resumed a panic {id:?} not raised in it ({panics:?})"
                ));
            }
            // Passed on: the enclosing nursery catches it.
            at.nursery
                .panics
                .lock()
                .unwrap()
                .push(id.unwrap_or_default());
            at.nursery.cancelled.store(true, Ordering::SeqCst);
            resume_unwind(payload)
        }
        Ok(result) => {
            if !panics.is_empty() {
                at.world
                    .violation(format!("a nursery returned although {panics:?} panicked"));
            }
            let mut raised = model.raised.lock().unwrap().clone();
            let mut got: Vec<u32> = match &result {
                Ok(_) => Vec::new(),
                Err(error) => error
                    .errors()
                    .filter_map(|fault| match fault {
                        Fault::Code(code) => Some(*code),
                        Fault::Cancelled => None,
                    })
                    .collect(),
            };
            raised.sort_unstable();
            got.sort_unstable();
            if got != raised {
                at.world.violation(format!(
                    "a nursery returned the errors {got:?}, but its tasks raised {raised:?}"
                ));
            }
            match result {
                Ok(_) => Ok(()),
                Err(_) if got.is_empty() => Err(Fault::Cancelled),
                Err(_) => Err(Fault::Code(at.world.fresh())),
            }
        }
    }
}

/// Runs a parallel program on a four-thread executor and checks it.
pub fn run(program: &PBlock) -> Result<(), String> {
    quiet_program_panics();
    let before = testing::live();
    let world = Arc::new(PWorld::default());
    let executor = Arc::new(async_executor::Executor::new());
    let root = Arc::new(PNursery::default());
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    let finished = std::thread::scope(|scope| {
        let _stop = stop_tx;
        for _ in 1..4 {
            let (executor, stop_rx) = (Arc::clone(&executor), stop_rx.clone());
            scope.spawn(move || futures_lite::future::block_on(executor.run(stop_rx.recv())));
        }
        let (program, world2, executor2, root2) = (
            Arc::clone(program),
            Arc::clone(&world),
            Arc::clone(&executor),
            Arc::clone(&root),
        );
        let top = async move {
            let _ = nursery(move |n: Nursery<'static, Fault>| async move {
                let at = PAt {
                    world: world2,
                    nursery: root2,
                    handle: n,
                    shielded: false,
                    executor: executor2,
                };
                nested(&at, program).await
            })
            .await;
        };
        let top = AssertUnwindSafe(top).catch_unwind();
        let timeout = async {
            async_io::Timer::after(Duration::from_secs(20)).await;
            Err(Box::new("timeout") as Box<dyn std::any::Any + Send>)
        };
        futures_lite::future::block_on(executor.run(top.or(timeout)))
    });
    if let Err(payload) = finished {
        if payload.downcast_ref::<&str>() == Some(&"timeout") {
            return Err("no end within 20 s (a lost wakeup or a deadlock)".into());
        }
        let id = payload.downcast_ref::<PanicId>().map(|id| id.0);
        let panics = root.panics.lock().unwrap().clone();
        if !id.is_some_and(|id| panics.contains(&id)) {
            return Err(format!(
                "the program panicked with {:?}, which it did not raise",
                super::describe(&*payload)
            ));
        }
    }
    let violations = world.violations.lock().unwrap().clone();
    if !violations.is_empty() {
        return Err(violations.join("\n"));
    }
    drop((world, executor, root));
    let after = testing::live();
    if after != before {
        return Err(format!(
            "left alive after the run: {after:?} (before: {before:?})"
        ));
    }
    Ok(())
}
