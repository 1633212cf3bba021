//! Blocking work in the `nursery_tree` program (`Step::Blocking`): a
//! closure run by `spawn_blocking` on a thread of the crate's pool, which
//! polls its cancel handle until it is cancelled or its virtual time is up.
//!
//! The closure runs in lock-step with the driver, so that what it sees is
//! as exact as what the tasks on the driver's thread see: it looks at its
//! cancel handle only when the driver, idle (every task waits), tells it to
//! (a *tick*), and the driver checks what it saw against the model before
//! anything else runs. When it returns, the driver waits for the wake that
//! its task must get (a lost wakeup otherwise) before it polls again, and
//! before the clock moves. So:
//!
//! * at every tick, `is_cancelled()` on the closure's thread says exactly
//!   what the model says of the nursery's scope (under the same virtual
//!   clock, entered on that thread): a cancellation reaches blocking work at
//!   the virtual instant it appears;
//! * the closure's failure cancels its nursery at once and comes out of it,
//!   its panic is resumed there with its payload, its `Ok` or `Cancelled` is
//!   no failure;
//! * a nursery that returns (not dropped) has waited for each of its
//!   closures to return; a closure is never dropped unrun unless a nursery
//!   around it was dropped;
//! * `Report::capture().blocking()` lists each closure running on its
//!   thread exactly once, abandoned exactly when a nursery around it was
//!   dropped (checked by the `Report` step).
//!
//! A closure whose nursery was dropped (abandoned) is no longer ticked; it
//! is told to return when the run ends, and the run waits for it.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hatchery::CancelHandle;
use hatchery::testing::VirtualClock;

use super::{At, BlockEnd, Fault, PanicId, Task, W, World, ticks};

/// The most blocking closures one run spawns (each holds a thread while it
/// waits); further `Blocking` steps do nothing.
pub(super) const MAX_JOBS: usize = 24;

/// How long the driver waits for a thread (to start, to answer a tick) or
/// for a wake before it calls it a deadlock.
const PATIENCE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Spawned; the closure has not started on its thread.
    Pending,
    /// The closure waits for a tick.
    Waiting,
    /// The driver asks the closure to look at its cancel handle.
    Tick,
    /// What the closure saw (`is_cancelled()`).
    Observed(bool),
    /// The driver tells the closure to return this.
    Return(Outcome),
    /// The run is over: return at once (abandoned closures).
    Shutdown,
    /// The closure has returned (its cancel handle dropped).
    Returned,
    /// The closure was dropped without running.
    Dropped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Cancelled,
    Fail(u32),
    Panic(u32),
}

#[derive(Default)]
struct Shared {
    phase: Mutex<Option<Phase>>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Option<Phase>> {
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn phase(&self) -> Phase {
        self.lock().unwrap_or(Phase::Pending)
    }

    fn set(&self, phase: Phase) {
        *self.lock() = Some(phase);
        self.changed.notify_all();
    }

    /// Waits (real time, bounded) while `busy` holds of the phase.
    fn wait_while(&self, busy: impl Fn(Phase) -> bool) -> Result<Phase, ()> {
        let guard = self.lock();
        let (guard, timeout) = self
            .changed
            .wait_timeout_while(guard, PATIENCE, |p| busy(p.unwrap_or(Phase::Pending)))
            .unwrap_or_else(|e| e.into_inner());
        if timeout.timed_out() {
            return Err(());
        }
        Ok(guard.unwrap_or(Phase::Pending))
    }
}

/// The closure's end of the protocol; dropped unrun, it says so.
struct Ticket(Arc<Shared>);

impl Ticket {
    fn serve(self, clock: &VirtualClock, cancel: CancelHandle) -> Result<(), Fault> {
        let out = {
            let shared = &self.0;
            let mut phase = shared.lock();
            *phase = Some(Phase::Waiting);
            shared.changed.notify_all();
            loop {
                phase = shared
                    .changed
                    .wait_while(phase, |p| {
                        matches!(p, Some(Phase::Waiting | Phase::Observed(_)))
                    })
                    .unwrap_or_else(|e| e.into_inner());
                match phase.expect("set") {
                    Phase::Tick => {
                        let seen = clock.enter(|| cancel.is_cancelled());
                        *phase = Some(Phase::Observed(seen));
                        shared.changed.notify_all();
                    }
                    Phase::Return(out) => break out,
                    Phase::Shutdown => break Outcome::Ok,
                    other => panic!("blocking work in phase {other:?}"),
                }
            }
        };
        drop(cancel);
        self.0.set(Phase::Returned);
        match out {
            Outcome::Ok => Ok(()),
            Outcome::Cancelled => Err(Fault::Cancelled),
            Outcome::Fail(code) => Err(Fault::Code(code)),
            Outcome::Panic(id) => std::panic::panic_any(PanicId(id)),
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut phase = self.0.lock();
        if phase.is_none() {
            *phase = Some(Phase::Dropped);
            self.0.changed.notify_all();
        }
    }
}

/// A closure spawned by the program, as the driver sees it.
struct Job {
    shared: Arc<Shared>,
    name: String,
    /// The model's task of the closure (in its nursery).
    task: Rc<Task>,
    /// Its nursery's scope (the scope of its cancel handle).
    scope: usize,
    /// When its work is done (virtual time).
    end: Instant,
    kind: BlockEnd,
    /// Its scope was cancelled when it was spawned (`.0`: for certain;
    /// `.1`: maybe, a failure handed over in that instant): the closure
    /// never runs then, as trio's `to_thread` starts no thread in a
    /// cancelled scope, and its task ends with `Cancelled`.
    cancelled_at_spawn: (bool, bool),
}

impl Job {
    /// A nursery around it was dropped: nobody waits for it any more.
    fn abandoned(&self, world: &World) -> bool {
        self.task
            .ancestors
            .borrow()
            .iter()
            .any(|&n| world.nurseries[n].dropped)
    }
}

thread_local! {
    static JOBS: RefCell<Vec<Job>> = const { RefCell::new(Vec::new()) };
}

/// `Step::Blocking`: spawns the closure into the nursery of `at`.
pub(super) fn spawn(at: &At<'_>, t: u8, kind: BlockEnd) {
    let (job, clock) = {
        let mut world = at.world.borrow_mut();
        if world.blocking >= MAX_JOBS {
            return;
        }
        world.blocking += 1;
        let scope = world.nurseries[at.nid].scope;
        let job = Job {
            shared: Arc::default(),
            name: format!("b{}", world.fresh()),
            task: Task::new(at.nid, None, world.within(at.nid)),
            scope,
            end: hatchery::now() + ticks(t),
            kind,
            cancelled_at_spawn: world.visible(scope),
        };
        (
            job,
            Arc::clone(world.clock.as_ref().expect("the run's clock")),
        )
    };
    let ticket = Ticket(Arc::clone(&job.shared));
    let name = job.name.clone();
    JOBS.with(|jobs| jobs.borrow_mut().push(job));
    at.nursery
        .named(name)
        .spawn_blocking(move |cancel| ticket.serve(&clock, cancel));
}

/// Called by the driver when it is idle: settles every closure that has
/// not started yet, and ticks each live one in turn. `Ok(true)` when one
/// returned and its task has been woken (poll again before anything else).
pub(super) fn settle(world: &W, woken: &dyn Fn() -> bool) -> Result<bool, String> {
    // The closures whose task is gone, as the crate says (outside any
    // scope, the report lists only blocking work).
    let report = hatchery::Report::capture();
    let gone: Vec<&str> = report
        .blocking()
        .iter()
        .filter(|task| task.is_abandoned())
        .filter_map(|task| task.info().name())
        .collect();
    let mut index = 0;
    loop {
        let Some((shared, name)) = JOBS.with(|jobs| {
            let jobs = jobs.borrow();
            jobs.get(index)
                .map(|job| (Arc::clone(&job.shared), job.name.clone()))
        }) else {
            return Ok(false);
        };
        let phase = shared
            .wait_while(|p| p == Phase::Pending)
            .map_err(|()| format!("blocking work {name} never started on a thread"))?;
        let remove = |index: usize| JOBS.with(|jobs| jobs.borrow_mut().remove(index));
        match phase {
            Phase::Dropped => {
                let job = remove(index);
                let mut w = world.borrow_mut();
                let (certain, maybe) = job.cancelled_at_spawn;
                if certain || maybe {
                    // Never run: spawned into a cancelled scope.
                    w.finish(&job.task, &Err(Fault::Cancelled));
                } else if !job.abandoned(&w) {
                    w.violation(format!(
                        "blocking work {name} was dropped before it ran, though no nursery \
                         around it was dropped and its scope was not cancelled when it was \
                         spawned"
                    ));
                }
                continue;
            }
            Phase::Waiting if JOBS.with(|jobs| jobs.borrow()[index].cancelled_at_spawn.0) => {
                world.borrow_mut().violation(format!(
                    "blocking work {name} runs, though its scope was cancelled when it was spawned"
                ));
                return Err(world.borrow().violations.join("\n"));
            }
            Phase::Waiting => {}
            other => return Err(format!("blocking work {name} idle in phase {other:?}")),
        }
        let abandoned = JOBS.with(|jobs| jobs.borrow()[index].abandoned(&world.borrow()));
        if !abandoned && gone.contains(&name.as_str()) {
            world.borrow_mut().violation(format!(
                "blocking work {name} was abandoned (its task dropped), though no nursery \
                 around it was dropped"
            ));
            return Err(world.borrow().violations.join("\n"));
        }
        if abandoned {
            index += 1;
            continue;
        }
        // The scope's expiry is recorded here, on the driver's thread, and
        // what it wakes is polled first: so that the closure's look at its
        // handle wakes nothing, and the wake that its return causes is the
        // only one that can end the wait below.
        let handle = JOBS.with(|jobs| {
            world.borrow().scopes[jobs.borrow()[index].scope]
                .handle
                .clone()
        });
        handle.is_cancelled();
        if woken() {
            return Ok(true);
        }
        shared.set(Phase::Tick);
        let seen = match shared.wait_while(|p| p == Phase::Tick) {
            Ok(Phase::Observed(seen)) => seen,
            Ok(other) => return Err(format!("blocking work {name} answered {other:?}")),
            Err(()) => return Err(format!("blocking work {name} never answered a tick")),
        };
        let outcome = JOBS.with(|jobs| {
            let jobs = jobs.borrow();
            let job = &jobs[index];
            let mut w = world.borrow_mut();
            w.check(job.scope, seen, "the cancel handle of blocking work");
            if !seen && hatchery::now() < job.end {
                return None;
            }
            let outcome = match job.kind {
                BlockEnd::Done if seen => Outcome::Cancelled,
                BlockEnd::Done => Outcome::Ok,
                BlockEnd::Fail => Outcome::Fail(w.fresh()),
                BlockEnd::Panic => Outcome::Panic(w.fresh()),
            };
            match outcome {
                Outcome::Ok => w.finish(&job.task, &Ok(())),
                Outcome::Cancelled => w.finish(&job.task, &Err(Fault::Cancelled)),
                Outcome::Fail(code) => w.finish(&job.task, &Err(Fault::Code(code))),
                Outcome::Panic(id) => w.panicking(&job.task, id),
            }
            Some(outcome)
        });
        let Some(outcome) = outcome else {
            shared.set(Phase::Waiting);
            index += 1;
            continue;
        };
        shared.set(Phase::Return(outcome));
        match shared.wait_while(|p| p != Phase::Returned) {
            Ok(_) => {}
            Err(()) => return Err(format!("blocking work {name} never returned")),
        }
        remove(index);
        let deadline = std::time::Instant::now() + PATIENCE;
        while !woken() {
            if std::time::Instant::now() > deadline {
                return Err(format!(
                    "blocking work {name} returned, but its task was never woken (a lost wakeup)"
                ));
            }
            std::thread::yield_now();
        }
        return Ok(true);
    }
}

/// When the next live closure's work is done (a timer for the driver).
pub(super) fn next_end(world: &W) -> Option<Instant> {
    let world = world.borrow();
    JOBS.with(|jobs| {
        jobs.borrow()
            .iter()
            .filter(|job| !job.abandoned(&world))
            .map(|job| job.end)
            .min()
    })
}

/// Ends the run's closures (abandoned ones, or all of them if the run
/// stopped early) and waits until no thread runs one.
pub(super) fn shutdown() -> Result<(), String> {
    let jobs = JOBS.with(|jobs| std::mem::take(&mut *jobs.borrow_mut()));
    let mut out = Ok(());
    for job in jobs {
        let name = &job.name;
        let phase = match job.shared.wait_while(|p| p == Phase::Pending) {
            Ok(phase) => phase,
            Err(()) => {
                out = Err(format!("blocking work {name} never started on a thread"));
                continue;
            }
        };
        if matches!(phase, Phase::Dropped | Phase::Returned) {
            continue;
        }
        job.shared.set(Phase::Shutdown);
        if job.shared.wait_while(|p| p != Phase::Returned).is_err() {
            out = Err(format!("blocking work {name} never returned"));
        }
    }
    // The report's entry goes just after the closure returns.
    let deadline = std::time::Instant::now() + PATIENCE;
    while !hatchery::Report::capture().blocking().is_empty() {
        if std::time::Instant::now() > deadline {
            return Err("a blocking closure is still listed after it returned".into());
        }
        std::thread::yield_now();
    }
    out
}

/// The closures running on their thread now (to be listed by a report
/// captured next: they cannot return while the driver polls).
pub(super) fn running() -> Vec<usize> {
    JOBS.with(|jobs| {
        jobs.borrow()
            .iter()
            .enumerate()
            .filter(|(_, job)| job.shared.phase() == Phase::Waiting)
            .map(|(index, _)| index)
            .collect()
    })
}

/// The `Report` step's check of the blocking closures: each one that was
/// `running` before the report was captured is listed once, abandoned
/// exactly when a nursery around it was dropped.
pub(super) fn check_report(world: &mut World, report: &hatchery::Report, running: &[usize]) {
    let listed: Vec<(&str, bool)> = report
        .blocking()
        .iter()
        .filter_map(|task| Some((task.info().name()?, task.is_abandoned())))
        .collect();
    JOBS.with(|jobs| {
        let jobs = jobs.borrow();
        for job in running.iter().map(|&index| &jobs[index]) {
            let abandoned = job.abandoned(world);
            let found: Vec<bool> = listed
                .iter()
                .filter(|(name, _)| *name == job.name)
                .map(|&(_, abandoned)| abandoned)
                .collect();
            if found != [abandoned] {
                world.violation(format!(
                    "Report::capture() listed the blocking work {} as {found:?} (abandoned?), \
                     but it runs, abandoned: {abandoned}",
                    job.name
                ));
            }
        }
    });
}

/// The closures' state, for a stall's report.
pub(super) fn describe(world: &World) -> String {
    JOBS.with(|jobs| {
        jobs.borrow()
            .iter()
            .map(|job| {
                format!(
                    "{} {:?} abandoned: {}",
                    job.name,
                    job.shared.phase(),
                    job.abandoned(world)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    })
}
