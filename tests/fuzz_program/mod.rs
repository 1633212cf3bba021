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
#![allow(dead_code)]

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

#[derive(Debug)]
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
}

const MAX_DEPTH: u32 = 5;
const MAX_BLOCK: u32 = 6;
const MAX_STEPS: u32 = 160;

/// Decodes a program; any input decodes to some (possibly empty) program.
pub fn decode(data: &[u8]) -> Block {
    let mut u = Unstructured::new(data);
    let mut budget = MAX_STEPS;
    block(&mut u, 0, &mut budget)
}

fn block(u: &mut Unstructured<'_>, depth: u32, budget: &mut u32) -> Block {
    let len = u.int_in_range(0..=MAX_BLOCK).unwrap_or(0);
    let mut steps = Vec::new();
    for _ in 0..len {
        if *budget == 0 || u.is_empty() {
            break;
        }
        *budget -= 1;
        steps.push(step(u, depth, budget));
    }
    steps.into()
}

fn step(u: &mut Unstructured<'_>, depth: u32, budget: &mut u32) -> Step {
    // Failures and panics end a block: they get one weight in 20 each.
    let kind = match u.int_in_range(0..=19u8).unwrap_or(0) {
        14 => 1,
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
        3 if nested => Step::Spawn(block(u, depth + 1, budget)),
        4 if nested => Step::Start {
            before: block(u, depth + 1, budget),
            after: block(u, depth + 1, budget),
        },
        5 if nested => Step::Nursery(block(u, depth + 1, budget)),
        6 if nested => Step::DropNursery(byte(u) % 24, block(u, depth + 1, budget)),
        7 if nested => {
            let flags = byte(u);
            Step::Scope {
                deadline: (flags & 1 == 1).then(|| byte(u) % 24),
                shield: flags & 2 == 2,
                body: block(u, depth + 1, budget),
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
        13 if nested => Step::DropNursery(byte(u) % 24, block(u, depth + 1, budget)),
        0 => Step::Foreign(byte(u) % 24),
        _ => Step::Checkpoint,
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
            if !info.payload().is::<PanicId>() {
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
    /// The nurseries whose early drop may drop this task unfinished.
    ancestors: Vec<usize>,
    completed: Cell<bool>,
    panicked: Cell<bool>,
    /// The scope and the instant of the foreign await it is in, if any.
    foreign: Cell<Option<(usize, Instant)>>,
}

impl Task {
    /// A task of nursery `nursery`; one with a `caller` is `start()`ing.
    fn new(nursery: usize, caller: Option<Rc<Task>>, ancestors: Vec<usize>) -> Rc<Task> {
        Rc::new(Task {
            nursery,
            attached: Cell::new(caller.is_none()),
            caller,
            ancestors,
            completed: Cell::new(false),
            panicked: Cell::new(false),
            foreign: Cell::new(None),
        })
    }
}

#[derive(Default)]
struct World {
    scopes: Vec<MScope>,
    nurseries: Vec<MNursery>,
    violations: Vec<String>,
    next_id: u32,
    polls: u64,
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
            deadline_set_at: now,
            shield_set_at: now,
        });
        self.scopes.len() - 1
    }

    /// Checks what a checkpoint at scope `cur` observed against the model.
    fn check(&mut self, cur: usize, cancelled: bool, what: &str) {
        let now = hatchery::now();
        let (mut definite, mut maybe) = (false, false);
        let mut at = Some(cur);
        while let Some(index) = at {
            let scope = &self.scopes[index];
            definite |= scope.explicit || scope.deadline.is_some_and(|d| d <= now);
            maybe |= scope.failed;
            if scope.shield {
                break;
            }
            at = scope.parent;
        }
        if cancelled && !(definite || maybe) {
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
            for time in [scope.explicit_at, scope.failed_at, deadline]
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
            let causes = [scope.explicit_at, scope.failed_at, deadline];
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
                self.fail(scope);
                return;
            }
            let Some(caller) = at.caller.clone() else {
                return;
            };
            at = caller;
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
        let mut world = self.world.borrow_mut();
        world.nurseries[self.task.nursery].alive -= 1;
        let task = &self.task;
        if !task.completed.get() && !task.panicked.get() {
            let dropped = task.ancestors.iter().any(|&n| world.nurseries[n].dropped);
            if let (false, Some((scope, began))) = (dropped, task.foreign.get()) {
                // Dropped at a foreign await: only for a visible
                // cancellation, and as soon as it appeared.
                world.check(scope, true, "a foreign await that was dropped");
                world.check_prompt(scope, began, "a foreign await that was dropped");
            } else if !dropped {
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
}

fn exec<'n>(at: At<'n>, block: Block) -> Fut<'n> {
    Box::pin(async move {
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
                    at.task.foreign.set(Some((at.scope, began)));
                    ForeignTimer::new(began + ticks(*t)).await;
                    at.task.foreign.set(None);
                    w.borrow_mut().check_not_overdue(at.scope, began);
                }
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

fn spawn(at: &At<'_>, body: Block) {
    let w = &at.world;
    let (task, scope) = {
        let world = w.borrow();
        let task = Task::new(at.nid, None, world.within(at.nid));
        (task, world.nurseries[at.nid].scope)
    };
    let alive = Alive::new(w, &task);
    let child = At {
        task: Rc::clone(&task),
        scope,
        ..at.clone()
    };
    at.nursery.spawn(async move {
        let _alive = alive;
        let world = Rc::clone(&child.world);
        let out = exec(child, body).await;
        world.borrow_mut().finish(&task, &out);
        out
    });
}

async fn start(at: &At<'_>, before: Block, after: Block) -> Result<(), Fault> {
    let w = &at.world;
    let (task, nursery_scope) = {
        let world = w.borrow();
        let mut ancestors = world.within(at.nid);
        ancestors.extend(&at.task.ancestors);
        let task = Task::new(at.nid, Some(Rc::clone(&at.task)), ancestors);
        (task, world.nurseries[at.nid].scope)
    };
    let alive = Alive::new(w, &task);
    // Before `started`, the child runs in the caller's scope.
    let starting = At {
        task: Rc::clone(&task),
        ..at.clone()
    };
    at.nursery
        .start(move |status: Started<()>| async move {
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
                let running = At {
                    scope: nursery_scope,
                    ..starting
                };
                exec(running, after).await
            }
            .await;
            world.borrow_mut().finish(&task, &out);
            out
        })
        .await
}

async fn nested(at: &At<'_>, body: Block, drop_after: Option<u8>) -> Result<(), Fault> {
    let w = &at.world;
    let nid = {
        let mut world = w.borrow_mut();
        let mut ancestors = world.within(at.nid);
        ancestors.extend(&at.task.ancestors);
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
    let clock = VirtualClock::new();
    let world: W = Rc::default();
    let stats = clock.enter(|| drive(&clock, &world, program))?;
    let world = Rc::try_unwrap(world)
        .map_err(|_| "the program's model outlived the program".to_string())?
        .into_inner();
    if !world.violations.is_empty() {
        return Err(world.violations.join("\n"));
    }
    let (scopes, nurseries) = (world.scopes.len(), world.nurseries.len());
    drop(world); // its handles keep the scopes alive
    let after = testing::live();
    if after != before {
        return Err(format!(
            "left alive after the run: {after:?} (before: {before:?})"
        ));
    }
    Ok(Stats {
        scopes,
        nurseries,
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
        let next = match (clock.next_deadline(), next_foreign()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match next {
            Some(at) => {
                clock.advance_to(at);
                wake_foreign();
            }
            None => {
                return Err(
                    "stalled: every task waits, no timer is pending, and nothing woke the \
                     program (a lost wakeup or a deadlock)"
                        .to_string(),
                );
            }
        }
    }
}
