//! The nursery future: it polls the body and every child with the nursery's
//! scope current, admits children as they are spawned, applies the
//! cancellation rules to its tasks, and returns once all are done (the
//! nursery's invariants are in `nursery/mod.rs`).

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use pin_project_lite::pin_project;

use super::children::{
    BODY, Buffers, Children, Polled, TaskWaker, drop_caught, keep_first, poll_with,
};
use super::shared::Shared;
use crate::cancel::foreign::{Hold, Verdict, verdict};
use crate::cancel::tree::{Listener, Node};
use crate::cancel::{CancelReason, enter_node};
use crate::clock::{self, CANCELLED, NEVER};
use crate::context::{self, Here};
use crate::error::{CancelError, NurseryError, TaskFailure};
use crate::nursery::table::TaskTable;
use crate::panics::{forget_resuming, resuming, say_and_drop, say_panicked};
use crate::spawn::{Ended, Parallel};
use crate::sync::Recover;
use crate::task::TaskInfo;
use futures_task::ArcWake;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NurseryPhase {
    Idle,
    Running,
    Exited,
}

pin_project! {
    /// The future returned by [`nursery`] and [`local_nursery`].
    pub(super) struct NurseryFuture<E, T, Fut, C> {
        #[pin]
        body: Option<Fut>,
        body_output: Option<T>,
        // Some task (body or child) unwound with a cancellation.
        saw_cancelled: bool,
        body_info: TaskInfo,
        body_flag: Arc<TaskWaker>,
        // The nursery's node, moved into the current-scope slot while polling.
        slot: Option<Arc<Node>>,
        // The nursery's own listener to its node (invariant 5).
        watch: Option<Listener>,
        // Invariant 6.
        foreign: Foreign,
        shared: Arc<Shared<C, E>>,
        children: Children<C>,
        failures: Vec<TaskFailure<E>>,
        // The first panic of a task, to resume, and whose it was.
        panic: Option<(TaskInfo, Box<dyn Any + Send>)>,
        // The nursery returned `Pending` at least once (invariant 7).
        yielded: bool,
        // Invariant 7: the body finished with nothing left to wait for, and
        // leaving is still to yield once more.
        exit_yield: bool,
        phase: NurseryPhase,
        // The address of the scope the nursery's scope is linked under (0:
        // none), to see that it moved (the link keeps that scope alive, so
        // the address names it).
        parent: usize,
        // What the nursery tells its own task's owner (`cancel::foreign::Hold`).
        hold: Hold,
        // Where the failures go if it is dropped before it finished (`run`'s
        // root, whose forced shutdown drops it: they must not vanish).
        dropped_failures: Option<FailureSink<E>>,
        // Formats a failure's error for stderr, empty for a cancellation
        // (`E: CancelError` is known where the nursery is made, not in its
        // `Drop`).
        describe: fn(&E) -> String,
        // The address of the payload it resumed (0: none), for `panics`.
        resumed: usize,
    }

    impl<E, T, Fut, C> PinnedDrop for NurseryFuture<E, T, Fut, C> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            // A panic it resumed that is no longer on its way out (the
            // program caught it, and drops the nursery now) is gone: a later
            // one at the same address is another. (Dropped while that panic
            // unwinds, by the task that awaited it, it still is.)
            if *this.resumed != 0 && !std::thread::panicking() {
                crate::panics::forget_resumed(*this.resumed);
            }
            let running = *this.phase == NurseryPhase::Running;
            // What it had not reported yet, taken out before any user code
            // runs: the failures, the first panic of a task, and the
            // outcomes of parallel children it had not collected.
            let mut failures = Vec::new();
            let mut panic = None;
            if running {
                // Dropped before it finished (the hard cancel): what may
                // still run off this thread and cannot be dropped (a blocking
                // closure polling its handle) is told, and so is whoever
                // holds the scope's handle.
                this.shared.node.cancel(CancelReason::Message(
                    "its nursery was dropped before it finished".into(),
                ));
                failures = std::mem::take(this.failures);
                panic = this.panic.take();
                if let Some(parallel) = this.shared.parallel.get() {
                    for (task, ended) in parallel.take_outcomes() {
                        match ended {
                            Ended::Failed(error) => failures.push(TaskFailure { task, error }),
                            Ended::Panicked(payload) if panic.is_none() => {
                                panic = Some((task, payload));
                            }
                            Ended::Panicked(payload) => say_and_drop(
                                format!("{task} panicked too, while its nursery was being dropped"),
                                payload,
                            ),
                        }
                    }
                }
            }
            // Unlink first: a child's `Drop` may panic below.
            this.shared.node.exit();
            // The hard cancel (invariant 4): nothing can be spawned any more,
            // and every child and the body are dropped right here.
            let mut panicked = None;
            for chunk in this.shared.close() {
                for waiting in chunk {
                    drop_caught(waiting, &mut panicked);
                }
            }
            this.children.clear(&mut panicked);
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| this.body.set(None))) {
                keep_first(payload, &mut panicked);
            }
            this.children.give_back(this.shared.take_buffers());
            if !running {
                resume_or_say(panicked);
                return;
            }
            // `run`'s root (dropped by a forced shutdown) hands everything to
            // `run`, which reports it and resumes the first panic.
            if let Some(sink) = this.dropped_failures.take() {
                let panics = panic
                    .map(|(task, payload)| {
                        say_panicked(&task, &payload);
                        payload
                    })
                    .into_iter()
                    .chain(panicked);
                let mut dropped = sink.lock().recover();
                dropped.failures.extend(failures);
                for payload in panics {
                    if dropped.panic.is_none() {
                        dropped.panic = Some(payload);
                    } else {
                        say_and_drop("a task's `Drop` panicked too".into(), payload);
                    }
                }
                return;
            }
            // Nobody takes what it would have returned: said, not lost.
            let location = this.shared.table.location;
            let describe = *this.describe;
            for failure in failures {
                let error = crate::panics::caught_text(|| describe(&failure.error));
                if !error.is_empty() {
                    crate::stderr::write(&format!(
                        "hatchery: the nursery at {location} was dropped before it finished; \
                         {} had failed: {error}\n",
                        failure.task,
                    ));
                }
                // The error's `Drop` is user code too.
                drop_caught(failure, &mut panicked);
            }
            if let Some((task, payload)) = panic {
                say_and_drop(
                    format!(
                        "the nursery at {location} was dropped before it finished; {task} had \
                         panicked"
                    ),
                    payload,
                );
            }
            resume_or_say(panicked);
        }
    }
}

/// The first panic of a task's `Drop` during a nursery's drop comes out of
/// that drop, unless a panic is unwinding already (the nursery's owner
/// panicked): then it is said, as a second panic would abort the process.
fn resume_or_say(panicked: Option<Box<dyn Any + Send>>) {
    if let Some(payload) = panicked {
        if std::thread::panicking() {
            say_and_drop(
                "a task's `Drop` panicked while its nursery was dropped by a panic".into(),
                payload,
            );
        } else {
            resume_unwind(payload);
        }
    }
}

/// `{:?}` of an error, empty for a cancellation, as a function pointer
/// (`NurseryFuture::describe`).
fn describe<E: CancelError>(error: &E) -> String {
    if error.is_cancelled() {
        String::new()
    } else {
        format!("{error:?}")
    }
}

impl<E: CancelError, T, Fut, C> NurseryFuture<E, T, Fut, C> {
    #[track_caller]
    pub(super) fn new(
        shared: Arc<Shared<C, E>>,
        spare: Vec<Arc<TaskWaker>>,
        buffers: Buffers,
        body: Fut,
    ) -> Self {
        let mut children = Children::new(
            Arc::clone(&shared.wakeup),
            spare,
            Arc::clone(&shared.table),
            buffers,
        );
        let body_flag = children.body_waker();
        // A payload resumed before, and caught by the program, is gone.
        forget_resuming();
        NurseryFuture {
            body: Some(body),
            body_output: None,
            saw_cancelled: false,
            body_info: TaskInfo::body(),
            body_flag,
            slot: Some(Arc::clone(&shared.node)),
            watch: None,
            foreign: Foreign::default(),
            children,
            shared,
            failures: Vec::new(),
            panic: None,
            yielded: false,
            exit_yield: false,
            phase: NurseryPhase::Idle,
            parent: 0,
            hold: Hold::default(),
            dropped_failures: None,
            describe: describe::<E>,
            resumed: 0,
        }
    }

    /// If dropped before it finished, hands its failures to `sink`.
    pub(crate) fn keep_failures_in(&mut self, sink: FailureSink<E>) {
        self.dropped_failures = Some(sink);
    }
}

/// Where a nursery dropped mid-flight leaves its failures
/// (`NurseryFuture::keep_failures_in`).
pub(crate) type FailureSink<E> = Arc<std::sync::Mutex<Dropped<E>>>;

/// What a nursery dropped mid-flight had not reported yet.
pub(crate) struct Dropped<E> {
    /// Its failures, and the errors its parallel children returned that it
    /// had not collected yet (which may be cancellations).
    pub(crate) failures: Vec<TaskFailure<E>>,
    /// The first panic of a task, which it would have resumed.
    pub(crate) panic: Option<Box<dyn Any + Send>>,
}

impl<E> Default for Dropped<E> {
    fn default() -> Self {
        Dropped {
            failures: Vec::new(),
            panic: None,
        }
    }
}

/// What the nursery keeps for its tasks that wait in futures that cannot see
/// cancellation (invariant 6, `cancel::foreign`).
#[derive(Default)]
struct Foreign {
    /// Some task was parked in such a future: the nursery keeps a timer at
    /// its scope's effective deadline from then on.
    seen: bool,
    /// A verdict said "retry": poll every task again on the next poll.
    retry: bool,
    timer: Option<(Instant, clock::Timer)>,
}

impl Foreign {
    /// Keeps the timer at `node`'s effective deadline while some task was
    /// parked in a foreign future; when it fires, the expiry is recorded
    /// (which wakes the nursery through its listener).
    fn arm(&mut self, node: &Node, cx: &mut Context<'_>) {
        if !self.seen {
            return;
        }
        let at = match node.state() {
            // `FAR`: past the encodable range, never reached (a timer there
            // would fire under a virtual clock that jumps to it, and be
            // armed again at once).
            CANCELLED | NEVER | clock::FAR => {
                self.timer = None;
                return;
            }
            deadline => clock::from_nanos(deadline),
        };
        let timer = match &mut self.timer {
            Some((armed, timer)) => {
                if *armed != at {
                    timer.set_at(at);
                    *armed = at;
                }
                timer
            }
            slot @ None => &mut slot.insert((at, clock::timer_at(at))).1,
        };
        if Pin::new(timer).poll(cx).is_ready() {
            self.timer = None;
            // Records the expiry: the listener fires, the nursery is polled
            // again and every task with it.
            let _ = node.check();
            cx.waker().wake_by_ref();
        }
    }
}

/// Where the failures of a nursery's tasks are recorded (invariant 3), and
/// what is done with tasks parked in foreign futures (invariant 6).
struct Outcomes<'r, E> {
    node: &'r Node,
    failures: &'r mut Vec<TaskFailure<E>>,
    panic: &'r mut Option<(TaskInfo, Box<dyn Any + Send>)>,
    /// Some task (body or child) unwound with a cancellation.
    saw_cancelled: &'r mut bool,
    foreign: &'r mut Foreign,
}

impl<E: CancelError> Outcomes<'_, E> {
    fn error(&mut self, task: TaskInfo, error: E) {
        if error.is_cancelled() {
            *self.saw_cancelled = true;
        } else {
            self.node.cancel(CancelReason::TaskFailed(task.clone()));
            self.failures.push(TaskFailure { task, error });
        }
    }

    fn panic(&mut self, task: TaskInfo, payload: Box<dyn Any + Send>) {
        if self.panic.is_some() {
            // Only the first payload is resumed; this one is not lost.
            say_and_drop(
                format!("{task} panicked too, while its nursery was failing"),
                payload,
            );
            return;
        }
        self.node.cancel(CancelReason::TaskFailed(task.clone()));
        *self.panic = Some((task, payload));
    }

    /// A child finished with `outcome`, then its `Drop` panicked: both are
    /// its (its error is recorded, a panic first resumed), and the drop's
    /// panic is resumed unless a panic is already, then it is said.
    #[cold]
    fn drop_panicked(
        &mut self,
        task: TaskInfo,
        outcome: std::thread::Result<Result<(), E>>,
        dropped: Box<dyn Any + Send>,
    ) {
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(error)) => self.error(task.clone(), error),
            Err(payload) => self.panic(task.clone(), payload),
        }
        if self.panic.is_some() {
            say_and_drop(format!("the `Drop` of {task} panicked too"), dropped);
        } else {
            self.panic(task, dropped);
        }
    }

    /// The verdict for a task that returned `Pending` without a (live)
    /// hatchery await, `task` naming it for the holds (`context` invariant
    /// 4); what "keep" and "retry" ask of the nursery is recorded here.
    fn verdict(&mut self, task: usize) -> Verdict {
        let verdict = verdict(self.node, Some(task));
        match verdict {
            Verdict::Keep => self.foreign.seen = true,
            Verdict::Retry => self.foreign.retry = true,
            Verdict::Held | Verdict::Drop => {}
        }
        verdict
    }

    /// A task returned `Pending` without parking at a hatchery await: true
    /// if it must be dropped now, ending as if it returned `Cancelled`.
    fn unparked(&mut self, task: usize) -> bool {
        let drop = self.verdict(task) == Verdict::Drop;
        if drop {
            *self.saw_cancelled = true;
        }
        drop
    }

    /// A task returned `Pending` with a stale `PARKED` (`cancel::foreign`):
    /// kept as if it waited in a foreign future, but never dropped for it;
    /// true if it must be polled again for a fresh look (its scope is
    /// cancelled).
    #[cold]
    fn stale(&mut self, task: usize) -> bool {
        matches!(self.verdict(task), Verdict::Held | Verdict::Drop)
    }

    /// The counted parallel children, in a poll of the
    /// nursery: those spawned since its last poll get their admission
    /// time, those that did not succeed are recorded; returns how many
    /// still run. The waker is registered before the count is read, so
    /// that the last one to finish wakes the nursery. Not inlined: the
    /// nursery's poll loop over its own children stays as lean.
    #[inline(never)]
    fn parallel(&mut self, parallel: &Parallel<E>, table: &TaskTable, waker: &Waker) -> usize {
        parallel.register(waker);
        table.stamp_remote();
        let running = parallel.running();
        for (task, ended) in parallel.take_outcomes() {
            match ended {
                Ended::Failed(error) => self.error(task, error),
                Ended::Panicked(payload) => self.panic(task, payload),
            }
        }
        running
    }

    /// Polls the child at `key` (if it is queued) and records how it ended.
    fn poll_child<C>(&mut self, children: &mut Children<C>, key: usize, here: Here<'_>)
    where
        C: Future<Output = Result<(), E>> + Unpin,
    {
        let polled = children.poll(key, here);
        self.record(children, key, polled);
    }

    /// Polls a child just admitted, for its first time, and records how it
    /// ended.
    fn poll_admitted<C>(&mut self, children: &mut Children<C>, key: usize, here: Here<'_>)
    where
        C: Future<Output = Result<(), E>> + Unpin,
    {
        let polled = children.poll_admitted(key, here);
        self.record(children, key, polled);
    }

    #[inline(always)]
    fn record<C>(&mut self, children: &mut Children<C>, key: usize, polled: Polled<Result<(), E>>)
    where
        C: Future<Output = Result<(), E>> + Unpin,
    {
        match polled {
            // A cancelled child is not a failure: no need for its identity
            // (its table entry goes with the batch, like a success's).
            Polled::Done(Ok(Err(error))) if error.is_cancelled() => *self.saw_cancelled = true,
            Polled::Done(Ok(Err(error))) => self.error(children.failed(key), error),
            Polled::Done(Err(payload)) => self.panic(children.failed(key), payload),
            Polled::DropPanicked(outcome, payload) => {
                self.drop_panicked(children.failed(key), outcome, payload);
            }
            Polled::Unparked(task) if self.unparked(task) => {
                if let Err(payload) = children.drop_child(key) {
                    self.panic(children.failed(key), payload);
                }
            }
            Polled::Parked(flags) if flags.stale() => {
                if self.stale(children.task(key)) {
                    children.requeue(key);
                }
            }
            Polled::Parked(flags) if flags.noteworthy() && self.node.state() == CANCELLED => {
                children.note(key, flags);
            }
            Polled::Done(Ok(Ok(()))) | Polled::Unparked(_) | Polled::Parked(_) | Polled::Idle => {}
        }
    }
}

/// Keeps the nursery listening to its node (invariant 5); true if the
/// node's state changed since the last call.
fn node_changed(watch: &mut Option<Listener>, node: &Arc<Node>, cx: &mut Context<'_>) -> bool {
    let mut changed = false;
    loop {
        let listener = watch.get_or_insert_with(|| node.listen());
        if Pin::new(listener).poll(cx).is_pending() {
            return changed;
        }
        // Listen again before the tasks are polled: a change after this
        // point fires the new listener.
        *watch = None;
        changed = true;
    }
}

impl<E, T, Fut, C> Future for NurseryFuture<E, T, Fut, C>
where
    E: CancelError,
    Fut: Future<Output = Result<T, E>>,
    C: Future<Output = Result<(), E>> + Unpin,
{
    type Output = Result<Option<T>, NurseryError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.phase {
            NurseryPhase::Idle => {
                *this.parent = context::with_current(context::address);
                enter_node(&this.shared.node, None);
                *this.phase = NurseryPhase::Running;
            }
            NurseryPhase::Running => {
                // Moved to another task (or scope) since the last poll: the
                // nursery's scope follows whoever polls it, as a scope does.
                if context::with_current(context::address) != *this.parent {
                    let current = context::current();
                    this.shared.node.relink(current.as_ref());
                    *this.parent = context::address(current.as_ref());
                }
            }
            NurseryPhase::Exited => {
                panic!("hatchery: a nursery future was polled after it completed")
            }
        }
        let shared = &**this.shared;
        let node = &*shared.node;
        shared.wakeup.waker.register(cx.waker());
        let changed =
            node_changed(this.watch, &shared.node, cx) | std::mem::take(&mut this.foreign.retry);
        shared.draining.store(true, Ordering::Relaxed);

        let mut body = this.body;
        let children = this.children;
        let mut outcomes = Outcomes {
            node,
            failures: this.failures,
            panic: this.panic,
            saw_cancelled: this.saw_cancelled,
            foreign: this.foreign,
        };
        let body_flag = &*this.body_flag;
        let body_info = &*this.body_info;
        let body_output = &mut *this.body_output;
        let yielded = *this.yielded;
        let exit_yield = &mut *this.exit_yield;
        let waker = cx.waker();
        let (done, more) = context::enter_here(this.slot, |here| {
            let body_was_running = body.is_some();
            // The tasks woken since the last poll, the body among them; all of
            // them if the scope changed (invariant 5).
            let mut batch = children.take_woken();
            if changed {
                if body.is_some() && body_flag.mark_queued() {
                    batch.push(BODY);
                }
                // Every child in key order (a woken one is polled once: its
                // entry in `batch` is stale by then, invariant 2 of children).
                for key in 0..children.key_end() {
                    if children.mark_queued(key) {
                        outcomes.poll_child(children, key, here);
                    }
                }
            }
            for &key in &batch {
                if key != BODY {
                    outcomes.poll_child(children, key, here);
                    continue;
                }
                let Some(future) = body.as_mut().as_pin_mut() else {
                    continue;
                };
                if !body_flag.take_queued() {
                    continue;
                }
                let task = Arc::as_ptr(body_flag) as usize;
                match poll_with(future, body_flag, here) {
                    (Ok(Poll::Pending), flags) if flags.parked() => {
                        if flags.stale() && outcomes.stale(task) {
                            ArcWake::wake_by_ref(body_flag);
                        }
                        continue;
                    }
                    (Ok(Poll::Pending), _) if !outcomes.unparked(task) => continue,
                    // Dropped below, as if it returned `Cancelled`.
                    (Ok(Poll::Pending), _) => {}
                    (Ok(Poll::Ready(Ok(value))), _) => *body_output = Some(value),
                    (Ok(Poll::Ready(Err(error))), _) => outcomes.error(body_info.clone(), error),
                    (Err(payload), _) => outcomes.panic(body_info.clone(), payload),
                }
                // The body's `Drop` runs here; a panic in it is the body's.
                if let Err(payload) = catch_unwind(AssertUnwindSafe(|| body.set(None))) {
                    outcomes.panic(body_info.clone(), payload);
                }
            }
            // Then those that woke themselves in their last poll (they
            // yielded: invariant 9 of children).
            children.poll_requeued(|children, key| outcomes.poll_child(children, key, here));
            // Then the children spawned since (by the body just now, most
            // often), each polled once as it is admitted. Those spawned
            // during this loop wait for the next poll.
            let mut budget = None;
            let mut drained = None;
            let more = loop {
                let mut chunk = match shared.next_chunk(drained.take(), &mut budget) {
                    Ok(chunk) => chunk,
                    Err(more) => break more,
                };
                batch.clear();
                children.admit(chunk.drain(..), &mut batch);
                drained = Some(chunk);
                for &key in &batch {
                    outcomes.poll_admitted(children, key, here);
                }
            };
            children.recycle(batch);
            // The counted parallel children.
            let running = match shared.parallel.get() {
                None => 0,
                Some(parallel) => outcomes.parallel(parallel, &shared.table, waker),
            };
            let idle = children.is_empty() && running == 0;
            let finished = body.is_none() && idle;
            if body_was_running && body.is_none() {
                // The body is done: with nothing left to wait for, leaving
                // yields once more (invariant 7).
                *exit_yield = idle;
            }
            // Invariant 7: the nursery closes only once it has yielded.
            let must_yield = finished && (!yielded || *exit_yield);
            let done = finished && !must_yield && shared.try_close(waker);
            if must_yield {
                *exit_yield = false;
            }
            (done, more || must_yield || children.any_requeued())
        });
        if more || this.foreign.retry {
            cx.waker().wake_by_ref();
        }
        if !done {
            *this.yielded = true;
            if this.shared.off_thread.load(Ordering::Relaxed) {
                this.foreign.seen = true;
            }
            this.foreign.arm(node, cx);
            context::park_in(node);
            this.hold.pending(cx);
            return Poll::Pending;
        }

        *this.phase = NurseryPhase::Exited;
        this.hold.done();
        *this.watch = None;
        this.foreign.timer = None;
        // Like trio: a cancellation that some task unwound with, and that this
        // nursery's scope does not catch, propagates out of the nursery even
        // if the body itself returned a value.
        // A failure whose error holds a cancellation (a nested nursery's,
        // cancelled by this nursery's scope) is split the same way: caught
        // here if this scope catches, left in the error for the scope
        // outside otherwise (trio's split of nested groups).
        let held = this.failures.iter().any(|f| f.error.holds_cancelled());
        let caught = (*this.saw_cancelled || held) && node.exit_catches();
        if caught && held {
            for failure in this.failures.iter_mut() {
                failure.error.drop_cancelled();
            }
        }
        let uncaught = *this.saw_cancelled && !caught;
        node.exit();
        if let Some((task, payload)) = this.panic.take() {
            say_panicked(&task, &payload);
            // The panic is resumed with its own payload (callers downcast
            // it); the other failures would be lost with the unwinding.
            // (Written so that a failing stderr cannot panic instead.)
            for failure in this.failures.iter() {
                let error = crate::panics::caught_text(|| format!("{:?}", failure.error));
                crate::stderr::write(&format!(
                    "hatchery: {} failed while its nursery resumes a panic: {error}\n",
                    failure.task,
                ));
            }
            // For the catch outside (`caught_panic`): this one is named.
            *this.resumed = resuming(&*payload);
            resume_unwind(payload);
        }
        let failures = std::mem::take(this.failures);
        Poll::Ready(match this.body_output.take() {
            _ if uncaught || !failures.is_empty() => Err(NurseryError::new(failures, uncaught)),
            Some(value) => Ok(Some(value)),
            // The body unwound with a cancellation this nursery caught.
            None => Ok(None),
        })
    }
}

#[cfg(all(test, not(hatchery_loom)))]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use futures_lite::future::block_on;

    use crate::typed::nursery;
    use crate::{CancelScope, Cancelled, Nursery, SpawnError, current_scope, sleep, sleep_forever};

    /// Sets its flag when dropped.
    struct DropFlag<'f>(&'f AtomicBool);

    impl Drop for DropFlag<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn invariant_1_a_spawn_either_lands_before_the_close_or_fails_closed() {
        static RAN: AtomicBool = AtomicBool::new(false);
        let kept = std::sync::Arc::new(Mutex::new(None));
        let keeper = std::sync::Arc::clone(&kept);
        block_on(nursery(move |n: Nursery<'static, Cancelled>| {
            *keeper.lock().unwrap() = Some(n.clone());
            async move {
                let spawner = n.clone();
                // A child spawns a sibling in the nursery's last poll: it lands.
                n.spawn(async move {
                    spawner.spawn(async move {
                        RAN.store(true, Ordering::SeqCst);
                        Ok(())
                    });
                    Ok(())
                });
                Ok(())
            }
        }))
        .unwrap();
        assert!(RAN.load(Ordering::SeqCst), "the late spawn was waited for");
        let late = kept.lock().unwrap().take().unwrap();
        assert_eq!(late.try_spawn(async { Ok(()) }), Err(SpawnError::Closed));
    }

    #[test]
    fn invariant_2_the_body_and_every_child_run_in_the_nursery_scope() {
        let out = block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
            let child_scope = n.clone();
            n.spawn(async move {
                // The current scope is the nursery's: cancelling it here is
                // what the nursery's handle sees.
                current_scope().unwrap().cancel();
                assert!(child_scope.cancel_scope().cancel_called());
                Ok(())
            });
            sleep_forever().await?;
            Ok(())
        }));
        assert!(
            matches!(out, Ok(None)),
            "the body was cancelled with it: {out:?}"
        );
    }

    #[test]
    fn invariant_3_every_failure_is_recorded_and_a_cancellation_is_none() {
        let out = block_on(nursery(|n: Nursery<'_, std::io::Error>| async move {
            n.named("first")
                .spawn(async { Err(std::io::Error::other("first")) });
            n.named("second").spawn(async {
                let _ = sleep_forever().await; // cancelled by the first failure
                Err(std::io::Error::other("second, during cleanup"))
            });
            n.named("quiet").spawn(async {
                sleep_forever().await?; // unwinds with Cancelled: no failure
                Ok(())
            });
            Ok(())
        }));
        let error = out.unwrap_err();
        let mut names: Vec<_> = error.failures().iter().map(|f| f.task.name()).collect();
        names.sort();
        assert_eq!(names, [Some("first"), Some("second")]);
    }

    #[test]
    fn invariant_4_dropping_the_nursery_drops_every_child_at_once() {
        let (shielded, body) = (AtomicBool::new(false), AtomicBool::new(false));
        let (shielded, body) = (&shielded, &body);
        let mut future = Box::pin(nursery(|n: Nursery<'_, Cancelled>| async move {
            n.spawn(async move {
                let _flag = DropFlag(shielded);
                CancelScope::new()
                    .shield(true)
                    .run_typed(sleep_forever())
                    .await?;
                Ok(())
            });
            let _flag = DropFlag(body);
            sleep_forever().await?;
            Ok(())
        }));
        let waker = futures_task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(future.as_mut().poll(&mut cx).is_pending());
        drop(future);
        assert!(
            shielded.load(Ordering::SeqCst),
            "a shield does not hold against a drop"
        );
        assert!(body.load(Ordering::SeqCst));
    }

    #[cfg(feature = "test-util")]
    #[test]
    fn invariant_5_a_thousand_sleeping_children_cost_one_listener() {
        use std::sync::atomic::AtomicUsize;

        use crate::checkpoint;
        let listeners = AtomicUsize::new(usize::MAX);
        let listeners = &listeners;
        crate::testing::run(nursery(|n: Nursery<'_, Cancelled>| async move {
            for _ in 0..1000 {
                n.spawn(async {
                    sleep_forever().await?;
                    Ok(())
                });
            }
            // Shielded, so that the body's own wait listens elsewhere.
            CancelScope::new()
                .shield(true)
                .run_typed(checkpoint())
                .await?;
            listeners.store(crate::testing::live().listeners, Ordering::SeqCst);
            n.cancel_scope().cancel();
            Ok(())
        }))
        .unwrap();
        // The nursery's own listener; no child listens. (The counter is
        // process-wide and other tests run at the same time: a few of
        // theirs may be counted, never a thousand.)
        let listeners = listeners.load(Ordering::SeqCst);
        assert!((1..100).contains(&listeners), "{listeners} listeners");
    }

    #[test]
    fn invariant_6_a_child_parked_in_a_foreign_future_is_dropped_on_cancel() {
        let dropped = AtomicBool::new(false);
        let dropped = &dropped;
        let out = block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
            n.spawn(async move {
                let _flag = DropFlag(dropped);
                std::future::pending::<()>().await;
                Ok(())
            });
            sleep(Duration::from_millis(5)).await?;
            n.cancel_scope().cancel();
            Ok(())
        }));
        assert!(out.is_ok(), "{out:?}");
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn invariant_7_leaving_is_a_schedule_point_but_not_a_cancellation_point() {
        let waker = futures_task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        let mut empty = Box::pin(nursery(|_n: Nursery<'_, Cancelled>| async { Ok(1) }));
        assert!(empty.as_mut().poll(&mut cx).is_pending(), "it yields once");
        assert!(matches!(
            empty.as_mut().poll(&mut cx),
            std::task::Poll::Ready(Ok(Some(1)))
        ));
        // trio's `test_trivial_yields`: in a cancelled scope, an empty
        // nursery and one whose child never reaches a checkpoint still yield
        // but raise no `Cancelled`; the scope catches nothing.
        let scope = CancelScope::new();
        let handle = scope.handle();
        handle.cancel();
        let out = block_on(scope.run_typed(async {
            let empty = nursery(|_n: Nursery<'_, Cancelled>| async { Ok(1) }).await?;
            let quiet = nursery(|n: Nursery<'_, Cancelled>| async move {
                n.spawn(async { Ok(()) });
                Ok(2)
            })
            .await?;
            Ok::<_, Cancelled>((empty, quiet))
        }));
        assert!(
            matches!(out, Ok(Some((Some(1), Some(2))))),
            "leaving met the cancel: {out:?}"
        );
        assert!(!handle.cancelled_caught());
        // A child that does reach a checkpoint unwinds with `Cancelled`,
        // which the cancelled scope catches.
        let scope = CancelScope::new();
        let handle = scope.handle();
        handle.cancel();
        let out = block_on(
            scope.run_typed(nursery(|n: Nursery<'_, Cancelled>| async move {
                n.spawn(async {
                    crate::checkpoint().await?;
                    Ok(())
                });
                Ok(3)
            })),
        );
        assert!(matches!(out, Ok(None)), "{out:?}");
        assert!(handle.cancelled_caught());
    }
}
