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
//!    to the caller of `start()`.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;

use super::Shared;
use crate::cancel::foreign::ForeignWait;
use crate::cancel::tree::Node;
use crate::context;
use crate::error::{CancelError, Cancelled};
use crate::report::Kind;
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
/// nursery(|n: Nursery<'_, Cancelled>| async move {
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
}

impl<V> StartState<V> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slot<V>> {
        self.slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
            }),
            waker: AtomicWaker::new(),
            task: Node::new(None, false, Kind::Starting),
            nursery,
        });
        (
            Started {
                state: Arc::clone(&state),
            },
            state,
        )
    }

    /// Reports the child as started: `start()` returns `value`, and the child
    /// now belongs to the nursery. From this call on, the child is inside the
    /// nursery's cancel scope, no longer the caller's.
    ///
    /// ```
    /// use hatchery::{nursery, Cancelled, Nursery, Started};
    /// # futures::executor::block_on(async {
    /// nursery(|n: Nursery<'_, Cancelled>| async move {
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
    pub fn started(self, value: V) {
        let state = &self.state;
        {
            let mut slot = state.lock();
            if slot.abandoned {
                return; // nobody waits for the value any more
            }
            // Invariant 2: move into the nursery's scope before anything else
            // the child does, as trio does.
            state.task.reparent(&state.nursery);
            slot.value = Some(value);
        }
        state.waker.wake();
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
                let (polled, flags) = context::enter(&mut this.node, || {
                    context::track(None, || Pin::new(child).poll(cx))
                });
                match (polled, &this.node) {
                    (Poll::Ready(output), _) => output,
                    (Poll::Pending, Some(node)) if flags.parked() => {
                        context::park_in(node);
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
                    node.unlink();
                }
                resume_unwind(payload.unwrap_or_else(|| Box::new("started child panicked")));
            }
        };
        if let Some(node) = &this.node {
            node.unlink();
        }
        Poll::Ready(output)
    }
}

impl<C, E> Drop for Scoped<C, E> {
    fn drop(&mut self) {
        if let Some(node) = &self.node {
            node.unlink();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Starting,
    Done,
}

/// The future of `start()`.
pub(crate) struct StartFuture<C, V, E> {
    shared: Arc<Shared<C>>,
    child: Option<C>,
    foreign: ForeignWait,
    /// The task scope, moved into the current-scope slot while polling.
    slot: Option<Arc<Node>>,
    state: Arc<StartState<V>>,
    wrap: fn(Scoped<C, E>) -> C,
    info: TaskInfo,
    phase: Phase,
}

impl<C: Unpin, V, E> Unpin for StartFuture<C, V, E> {}

impl<C, V, E> StartFuture<C, V, E> {
    pub(crate) fn new(
        shared: Arc<Shared<C>>,
        child: C,
        state: Arc<StartState<V>>,
        wrap: fn(Scoped<C, E>) -> C,
        info: TaskInfo,
    ) -> Self {
        StartFuture {
            shared,
            child: Some(child),
            foreign: ForeignWait::default(),
            slot: Some(Arc::clone(&state.task)),
            state,
            wrap,
            info,
            phase: Phase::Idle,
        }
    }

    /// The child ended before `started` (or the future was dropped): drop it
    /// and release the nursery.
    fn abandon(&mut self) {
        self.phase = Phase::Done;
        self.child = None;
        self.state.lock().abandoned = true;
        self.state.task.unlink();
        // Only fails when handing a child over; there is none here.
        let _ = self.shared.finish_start(None);
    }
}

impl<C, V, E> Drop for StartFuture<C, V, E> {
    fn drop(&mut self) {
        if self.phase == Phase::Starting {
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
        match this.phase {
            Phase::Idle => {
                if let Err(error) = this.shared.begin_start() {
                    this.phase = Phase::Done;
                    panic!(
                        "hatchery: start() called at {}: {error}",
                        this.info.location()
                    );
                }
                this.phase = Phase::Starting;
                this.state.task.link(context::current().as_ref());
            }
            Phase::Starting => {}
            Phase::Done => panic!("hatchery: a start() future was polled after it completed"),
        }
        let Some(child) = &mut this.child else {
            unreachable!("a starting child is present until start() completes");
        };
        this.state.waker.register(cx.waker());
        let polled = catch_unwind(AssertUnwindSafe(|| {
            context::enter(&mut this.slot, || {
                context::track(None, || Pin::new(child).poll(cx))
            })
        }));
        let value = this.state.lock().value.take();
        let (polled, parked) = match polled {
            Ok((polled, flags)) => (Ok(polled), flags.parked()),
            Err(payload) => (Err(payload), false),
        };

        let Some(value) = value else {
            return match polled {
                Ok(Poll::Pending) if parked => {
                    if let Some(node) = &this.slot {
                        context::park_in(node);
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
                    this.abandon();
                    Poll::Ready(Err(error))
                }
                Ok(Poll::Ready(Ok(()))) => {
                    let cancelled = this.state.task.is_cancelled();
                    this.abandon();
                    if cancelled {
                        return Poll::Ready(Err(Cancelled.into()));
                    }
                    panic!(
                        "hatchery: the child passed to start() ({}) returned without calling \
                         `started()`; call `status.started(value)` once it is ready, or use \
                         spawn() if nobody needs to wait for it",
                        this.info
                    )
                }
            };
        };

        // Invariant 2: from here on the child belongs to the nursery.
        this.phase = Phase::Done;
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
