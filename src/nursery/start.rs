//! `start()`: spawn a child and wait until it says it is ready.
//!
//! While it starts, the child is polled by the `start()` future itself, in a
//! task scope that is a child of the *caller's* scope, so cancelling the caller
//! cancels the starting child. When the child calls [`Started::started`], its
//! task scope is moved under the nursery's scope and the child is handed to the
//! nursery, which from then on polls it and collects its result.
//!
//! # Invariants
//!
//! 1. While a `start()` is in flight the nursery stays open (`pending_starts`),
//!    so the hand-over cannot find it closed unless the nursery future was
//!    dropped.
//! 2. Anything the child does after `started` (finishing, failing, panicking,
//!    even within the same poll) belongs to the nursery; anything before belongs
//!    to the caller of `start()`. A `start()` future dropped after `started`
//!    was called (from another task or thread) but before it was polled
//!    again hands the child over as its poll would have.
//! 3. As in trio, `started` moves nothing when the caller's scope is already
//!    cancelled at that moment: the child stays under `start()`, which waits
//!    for it to finish and returns the value (or the child's error, or
//!    `Cancelled`). A child never moves into a place where no cancelled
//!    scope would catch the `Cancelled` it may be unwinding with.
//! 4. A `Started` handle dropped without `started` ends the `start()` at
//!    once, with a panic that says so (the caller would wait forever),
//!    unless the child is unwinding: its task scope is cancelled, or the
//!    handle was dropped in a panic or in a cancelled scope (a timeout
//!    inside the child that ran out, a nested nursery whose sibling failed).
//!    Then `start()` waits for the child to finish as usual and returns its
//!    error (or panics if it returns `Ok` without calling `started`), as
//!    trio does: the child's error is never replaced by this panic. A child
//!    that catches that cancellation or panic and runs on keeps `start()`
//!    waiting until it ends, as in trio.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use super::shared::Shared;
use crate::cancel::CancelReason;
use crate::cancel::foreign::{ForeignWait, Hold};
use crate::cancel::tree::Kind;
use crate::cancel::tree::Node;
use crate::context;
use crate::error::{CancelError, Cancelled};
use crate::sync::{Arc, AtomicWaker, Mutex, MutexGuard, Recover};
use crate::task::TaskInfo;

/// Given to a child started with `start()`: call [`started`](Started::started)
/// once the child is ready, handing a value back to the caller of `start()`.
///
/// `started` consumes the handle, so calling it twice does not compile:
///
/// ```compile_fail
/// fn twice(status: hatchery::Started<u32>) {
///     status.started(1);
///     status.started(2); // error: use of moved value
/// }
/// ```
///
/// # Examples
///
/// ```
/// use hatchery::{nursery, Cancelled, Nursery, Started};
///
/// # futures::executor::block_on(async {
/// nursery(|n| async move {
///     let port = n
///         .start(|status: Started<u16>| async move {
///             status.started(8080); // "listening"
///             Ok(())
///         })
///         .await?;
///     assert_eq!(port, 8080);
///     Ok(())
/// })
/// .await
/// .unwrap();
/// # });
/// ```
pub struct Started<V> {
    state: Arc<StartState<V>>,
    /// `started` was called (invariant 4).
    called: bool,
}

/// What a `Started` handle shares with its `start()` future.
pub(crate) struct StartState<V> {
    slot: Mutex<Slot<V>>,
    /// The waker of the `start()` future: `started` may be called from
    /// another task or thread, not only from within the child's poll.
    waker: AtomicWaker,
    /// The starting child's task scope and the nursery's scope.
    task: Arc<Node>,
    nursery: Arc<Node>,
}

struct Slot<V> {
    value: Option<V>,
    /// The `start()` future is gone; `started` must not move the task scope.
    abandoned: bool,
    /// `started` found the caller cancelled: the child stays (invariant 3).
    stays: bool,
    /// The handle was dropped without `started` (invariant 4).
    dropped: bool,
}

impl<V> StartState<V> {
    fn lock(&self) -> MutexGuard<'_, Slot<V>> {
        self.slot.lock().recover()
    }
}

impl<V> fmt::Debug for Started<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Started").finish_non_exhaustive()
    }
}

impl<V> Started<V> {
    pub(crate) fn new(nursery: Arc<Node>) -> (Self, Arc<StartState<V>>) {
        let state = Arc::new(StartState {
            slot: Mutex::new(Slot {
                value: None,
                abandoned: false,
                stays: false,
                dropped: false,
            }),
            waker: AtomicWaker::new(),
            task: Node::new(None, false, Kind::Starting),
            nursery,
        });
        (
            Started {
                state: Arc::clone(&state),
                called: false,
            },
            state,
        )
    }

    /// Reports the child as started: `start()` returns `value`, and the child
    /// now belongs to the nursery. From this call on, the child is inside the
    /// nursery's cancel scope, no longer the caller's.
    ///
    /// As in trio, if the caller of `start()` is already cancelled at this
    /// moment, the child does not move: it stays under `start()`, which
    /// returns `value` once the child finishes (or the child's error, or
    /// `Cancelled` if it meets a checkpoint first).
    ///
    /// ```
    /// use hatchery::{nursery, Cancelled, Nursery, Started};
    /// # futures::executor::block_on(async {
    /// nursery(|n| async move {
    ///     let () = n.start(|status: Started<()>| async move {
    ///         status.started(());
    ///         Ok(())
    ///     }).await?;
    ///     Ok(())
    /// })
    /// .await
    /// .unwrap();
    /// # });
    /// ```
    pub fn started(mut self, value: V) {
        self.called = true;
        let state = &self.state;
        {
            let mut slot = state.lock();
            if slot.abandoned {
                return; // nobody waits for the value any more
            }
            if state.task.is_cancelled() {
                // Invariant 3: the child stays where a cancelled scope is.
                slot.stays = true;
            } else {
                // Invariant 2: move into the nursery's scope before anything
                // else the child does, as trio does.
                state.task.reparent(&state.nursery);
            }
            slot.value = Some(value);
        }
        state.waker.wake();
    }
}

impl<V> Drop for Started<V> {
    fn drop(&mut self) {
        if self.called {
            return;
        }
        // Invariant 4: a handle dropped while its child unwinds (a panic, or
        // a cancelled scope around the drop: a `move_on_after` that timed
        // out, a nested nursery whose sibling failed) does not end the
        // `start()`: the child is finishing, and `start()` returns how.
        let unwinding = std::thread::panicking()
            || context::current().is_some_and(|node| node.check().is_err());
        if unwinding {
            return;
        }
        self.state.lock().dropped = true;
        self.state.waker.wake();
    }
}

/// A started child, as handed to the nursery: it keeps running in its own task
/// scope (now a child of the nursery's), or reports what it already did.
pub(crate) struct Scoped<C, E> {
    node: Option<Arc<Node>>,
    foreign: ForeignWait,
    state: ScopedState<C, E>,
}

// Nothing in `Scoped` is ever pinned: the child is `Unpin` and polled
// through `Pin::new`, the rest are plain values.
impl<C: Unpin, E> Unpin for Scoped<C, E> {}

enum ScopedState<C, E> {
    Running(C),
    Finished(Option<Result<(), E>>),
    Panicked(Option<Box<dyn Any + Send>>),
}

impl<C, E> Future for Scoped<C, E>
where
    C: Future<Output = Result<(), E>> + Unpin,
    E: CancelError,
{
    type Output = Result<(), E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        let this = self.get_mut();
        let output = match &mut this.state {
            ScopedState::Running(child) => {
                let (polled, flags) =
                    context::enter_track(&mut this.node, cx.waker(), || Pin::new(child).poll(cx));
                match (polled, &this.node) {
                    (Poll::Ready(output), _) => output,
                    (Poll::Pending, Some(node)) if flags.parked() => {
                        if flags.stale() {
                            this.foreign.poll_stale(node, cx);
                        } else {
                            context::park_in(node);
                        }
                        return Poll::Pending;
                    }
                    // Every await is a cancellation point (`cancel::foreign`).
                    (Poll::Pending, Some(node)) => {
                        std::task::ready!(this.foreign.poll(node, cx));
                        // Its `Drop` runs here; a panic in it is the child's.
                        this.state = ScopedState::Finished(None);
                        Err(E::from(Cancelled))
                    }
                    (Poll::Pending, None) => unreachable!("the node is back after the poll"),
                }
            }
            ScopedState::Finished(output) => output.take().unwrap_or(Ok(())),
            ScopedState::Panicked(payload) => {
                let payload = payload.take();
                if let Some(node) = &this.node {
                    node.exit();
                }
                resume_unwind(payload.unwrap_or_else(|| Box::new("started child panicked")));
            }
        };
        // The task scope catches the cancellation it caused itself (the
        // child cancelled `current_scope()`), as any cancelled scope does;
        // one from the nursery or further out goes on to be caught there.
        let output = match output {
            Err(error)
                if error.is_cancelled() && this.node.as_ref().is_some_and(|n| n.exit_catches()) =>
            {
                Ok(())
            }
            output => output,
        };
        if let Some(node) = &this.node {
            node.exit();
        }
        Poll::Ready(output)
    }
}

impl<C, E> Drop for Scoped<C, E> {
    fn drop(&mut self) {
        if let Some(node) = &self.node {
            node.exit();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StartPhase {
    Idle,
    Starting,
    Done,
}

/// The future of `start()`.
pub(crate) struct StartFuture<C, V, E> {
    shared: Arc<Shared<C, E>>,
    child: Option<C>,
    foreign: ForeignWait,
    /// The value of a child that stays under `start()` (invariant 3).
    kept: Option<V>,
    /// `begin_start` was already called (by `try_start`).
    registered: bool,
    /// The task scope, moved into the current-scope slot while polling.
    slot: Option<Arc<Node>>,
    state: Arc<StartState<V>>,
    wrap: fn(Scoped<C, E>) -> C,
    info: TaskInfo,
    phase: StartPhase,
    /// The address of the scope the task scope was linked under at the
    /// first poll (`context::address`), to see that `start()` moved.
    parent: usize,
    /// What `start()` tells its own task's owner (`cancel::foreign::Hold`).
    hold: Hold,
}

impl<C: Unpin, V, E> Unpin for StartFuture<C, V, E> {}

impl<C, V, E> StartFuture<C, V, E> {
    pub(crate) fn new(
        shared: Arc<Shared<C, E>>,
        child: C,
        state: Arc<StartState<V>>,
        wrap: fn(Scoped<C, E>) -> C,
        info: TaskInfo,
    ) -> Self {
        StartFuture {
            shared,
            child: Some(child),
            foreign: ForeignWait::default(),
            kept: None,
            registered: false,
            slot: Some(Arc::clone(&state.task)),
            state,
            wrap,
            info,
            phase: StartPhase::Idle,
            parent: 0,
            hold: Hold::default(),
        }
    }

    /// The child ended before `started` (or the future was dropped): drop it
    /// and release the nursery.
    fn abandon(&mut self) {
        self.phase = StartPhase::Done;
        let child = self.child.take();
        self.state.lock().abandoned = true;
        self.state.task.exit();
        // Only fails when handing a child over; there is none here.
        let _ = self.shared.finish_start(None);
        // Last: a child whose `Drop` panics finds the start already over.
        drop(child);
    }
}

impl<C, V, E> StartFuture<C, V, E> {
    /// `try_start`: the nursery was found open and now waits for this start.
    pub(crate) fn registered(mut self) -> Self {
        self.registered = true;
        self
    }
}

impl<C, V, E> StartFuture<C, V, E> {
    /// Invariant 2 when the future is dropped: a child that called
    /// `started` (from another task or thread) before the future was polled
    /// again belongs to the nursery, which gets it instead of its being
    /// dropped; its value has nobody to go to. True if it was handed over.
    fn hand_over_started(&mut self) -> bool {
        let value = {
            let mut slot = self.state.lock();
            if slot.stays {
                return false;
            }
            match slot.value.take() {
                Some(value) => value,
                None => return false,
            }
        };
        let Some(child) = self.child.take() else {
            return false;
        };
        self.phase = StartPhase::Done;
        // `started` already moved the task scope under the nursery's.
        let scoped = (self.wrap)(Scoped {
            node: self.slot.take(),
            foreign: ForeignWait::default(),
            state: ScopedState::Running(child),
        });
        // A nursery future already dropped drops the child in there.
        let _ = self.shared.finish_start(Some((scoped, self.info.clone())));
        drop(value);
        true
    }
}

impl<C, V, E> Drop for StartFuture<C, V, E> {
    fn drop(&mut self) {
        if self.phase == StartPhase::Starting && self.hand_over_started() {
            return;
        }
        if self.phase == StartPhase::Starting || (self.phase == StartPhase::Idle && self.registered)
        {
            self.abandon();
        }
    }
}

impl<C, V, E> Future for StartFuture<C, V, E>
where
    C: Future<Output = Result<(), E>> + Unpin,
    E: CancelError,
{
    type Output = Result<V, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<V, E>> {
        let this = self.get_mut();
        let polled = this.poll_start(cx);
        if polled.is_pending() {
            this.hold.pending(cx);
        } else {
            this.hold.done();
        }
        polled
    }
}

impl<C, V, E> StartFuture<C, V, E>
where
    C: Future<Output = Result<(), E>> + Unpin,
    E: CancelError,
{
    fn poll_start(&mut self, cx: &mut Context<'_>) -> Poll<Result<V, E>> {
        let this = self;
        match this.phase {
            StartPhase::Idle => {
                if !this.registered
                    && let Err(error) = this.shared.begin_start()
                {
                    this.phase = StartPhase::Done;
                    panic!(
                        "hatchery: start() called at {}: {error} (use try_start to handle \
                         this without panicking)",
                        this.info.location()
                    );
                }
                this.phase = StartPhase::Starting;
                // `started` may have run already, in the child's closure
                // itself: its task scope is under the nursery's then, and
                // stays there (linked under the caller's too, the nursery's
                // cancellation would no longer reach it).
                let current = context::current();
                this.parent = context::address(current.as_ref());
                // Under the lock `started` moves the task scope with: a
                // `started` on another thread between the look and the
                // link would leave it under both (the caller's cancel then
                // reached a child its nursery owned).
                let slot = this.state.lock();
                if slot.value.is_none() || slot.stays {
                    this.state.task.link(current.as_ref());
                }
                drop(slot);
            }
            StartPhase::Starting => {
                // Moved to another task (or scope) since the last poll: the
                // starting child is in the scope of whoever awaits
                // `start()` now, as a moved scope is. Under the lock
                // `started` moves it into the nursery with: once moved
                // there (not staying), it stays.
                if context::with_current(context::address) != this.parent {
                    let current = context::current();
                    let slot = this.state.lock();
                    if slot.value.is_none() || slot.stays {
                        this.state.task.relink(current.as_ref());
                    }
                    drop(slot);
                    this.parent = context::address(current.as_ref());
                }
            }
            StartPhase::Done => panic!("hatchery: a start() future was polled after it completed"),
        }
        let Some(child) = &mut this.child else {
            unreachable!("a starting child is present until start() completes");
        };
        this.state.waker.register(cx.waker());
        let polled = catch_unwind(AssertUnwindSafe(|| {
            context::enter_track(&mut this.slot, cx.waker(), || Pin::new(child).poll(cx))
        }));
        let (value, dropped) = {
            let mut slot = this.state.lock();
            match slot.value.take() {
                // Invariant 3: the child stays under `start()`.
                Some(value) if slot.stays => {
                    this.kept = Some(value);
                    (None, false)
                }
                value => (value, slot.dropped),
            }
        };
        let (polled, parked, stale) = match polled {
            Ok((polled, flags)) => (Ok(polled), flags.parked(), flags.stale()),
            Err(payload) => (Err(payload), false, false),
        };
        // Invariant 4; a child that ended in this poll (its handle dropped
        // with it) is reported as it ended instead.
        // A child whose scope is cancelled may drop its handle on the way
        // out (a `.cancellable()` block that held it): it is finishing.
        if dropped
            && value.is_none()
            && this.kept.is_none()
            && matches!(polled, Ok(Poll::Pending))
            && !this.state.task.is_cancelled()
        {
            this.abandon();
            panic!(
                "hatchery: the child passed to start() ({}) dropped its Started handle without \
                 calling started(); start() would wait forever. Call `status.started(value)` \
                 once the child is ready, or use spawn() if nobody needs to wait for it (a \
                 closure parameter its async block does not use, such as `_status`, is dropped \
                 when the closure returns: name it `status` and write `let _keep = status;` \
                 inside the block to keep it)",
                this.info
            );
        }

        let Some(value) = value else {
            return match polled {
                Ok(Poll::Pending) if parked => {
                    match &this.slot {
                        Some(node) if stale => this.foreign.poll_stale(node, cx),
                        Some(node) => context::park_in(node),
                        None => {}
                    }
                    Poll::Pending
                }
                // Every await is a cancellation point (`cancel::foreign`):
                // the starting child is dropped; `start()` is cancelled.
                Ok(Poll::Pending) => {
                    let Some(node) = &this.slot else {
                        unreachable!("the task scope is back after the poll");
                    };
                    std::task::ready!(this.foreign.poll(node, cx));
                    this.abandon();
                    Poll::Ready(Err(Cancelled.into()))
                }
                Err(payload) => {
                    this.abandon();
                    resume_unwind(payload)
                }
                Ok(Poll::Ready(Err(error))) => {
                    // The child cancelled its own task scope (its
                    // `current_scope()`) and unwound: that scope catches it,
                    // as after the hand-over; a value it passed to `started`
                    // (it stayed, being cancelled) is still the caller's.
                    let caught = error.is_cancelled() && this.state.task.exit_catches();
                    this.abandon();
                    if !caught {
                        return Poll::Ready(Err(error));
                    }
                    match this.kept.take() {
                        Some(value) => Poll::Ready(Ok(value)),
                        None => no_started(&this.info),
                    }
                }
                Ok(Poll::Ready(Ok(()))) => {
                    let cancelled = this.state.task.is_cancelled();
                    this.abandon();
                    if let Some(value) = this.kept.take() {
                        // It stayed, and finished without a checkpoint.
                        return Poll::Ready(Ok(value));
                    }
                    if cancelled {
                        return Poll::Ready(Err(Cancelled.into()));
                    }
                    no_started(&this.info)
                }
            };
        };

        // Invariant 2: from here on the child belongs to the nursery.
        this.phase = StartPhase::Done;
        let state = match polled {
            Ok(Poll::Pending) => match this.child.take() {
                Some(child) => ScopedState::Running(child),
                None => ScopedState::Finished(None),
            },
            Ok(Poll::Ready(output)) => {
                this.child = None;
                ScopedState::Finished(Some(output))
            }
            Err(payload) => {
                this.child = None;
                ScopedState::Panicked(Some(payload))
            }
        };
        // A child that failed in the poll that handed it over (`started`,
        // then an error or a panic) cancels its nursery before `start()`
        // returns, as it would had the nursery polled it (trio's child
        // fails in the step that resumes the caller): the caller goes on in
        // a nursery already told, not one that hears of it at its next poll.
        let failed = match &state {
            ScopedState::Finished(Some(Err(error))) => !error.is_cancelled(),
            ScopedState::Panicked(_) => true,
            _ => false,
        };
        if failed {
            this.shared
                .node
                .cancel(CancelReason::TaskFailed(this.info.clone()));
        }
        // `started` already moved the task scope under the nursery's.
        let node = this.slot.take();
        let scoped = (this.wrap)(Scoped {
            node,
            foreign: ForeignWait::default(),
            state,
        });
        match this.shared.finish_start(Some((scoped, this.info.clone()))) {
            Ok(()) => Poll::Ready(Ok(value)),
            // The nursery future was dropped while the child was starting.
            Err(_) => Poll::Ready(Err(Cancelled.into())),
        }
    }
}

/// The panic of a child that ended without calling `started()` (and without
/// a cancellation from outside to explain it).
fn no_started(info: &TaskInfo) -> ! {
    panic!(
        "hatchery: the child passed to start() ({info}) returned without calling \
         `started()`; call `status.started(value)` once it is ready, or use \
         spawn() if nobody needs to wait for it"
    )
}
