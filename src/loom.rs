//! Hooks for the loom models in `tests/loom.rs` (only with
//! `RUSTFLAGS="--cfg hatchery_loom"`): a cancel-tree node and a nursery's
//! child set, behind thin handles, with the crate's own waiter.

use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::cancel::tree::Kind;
use crate::cancel::tree::Node;
use crate::loom_children::{BODY, Children, Wakeup};
use crate::nursery::table::TaskTable;

/// A node's state while it is effectively cancelled.
pub const CANCELLED: u64 = crate::clock::CANCELLED;
/// A node's state while nothing applies to it.
pub const NEVER: u64 = crate::clock::NEVER;

/// One node of the cancel tree (an entered scope).
#[derive(Clone)]
pub struct Scope(Arc<Node>);

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope").finish_non_exhaustive()
    }
}

impl Scope {
    /// A new node, unshielded or not, linked under `parent` (a root without).
    pub fn new(parent: Option<&Scope>, shield: bool) -> Scope {
        let node = Node::new(None, shield, Kind::Starting);
        node.link(parent.map(|parent| &parent.0));
        Scope(node)
    }

    /// A new node linked under `parent` the way a scope's own node is
    /// entered (`Node::enter_owned`: without its own lock while nobody else
    /// refers to it).
    pub fn enter_owned(parent: Option<&Scope>) -> Scope {
        let mut node = Node::new(None, false, Kind::Starting);
        Node::enter_owned(&mut node, parent.map(|parent| Arc::clone(&parent.0)), None);
        Scope(node)
    }

    /// `Node::cancel` (an explicit cancel).
    pub fn cancel(&self) {
        self.0.cancel(crate::CancelReason::Explicit);
    }

    /// `Node::set_shield`.
    pub fn set_shield(&self, shield: bool) {
        self.0.set_shield(shield);
    }

    /// `Node::relink`: moves the node under `parent`, as a nursery does
    /// when it is polled by another task.
    pub fn relink(&self, parent: Option<&Scope>) {
        self.0.relink(parent.map(|parent| &parent.0));
    }

    /// `Node::unlink` (what a scope does when it exits).
    pub fn unlink(&self) {
        self.0.unlink();
    }

    /// The cached effective state (one load).
    pub fn state(&self) -> u64 {
        self.0.state()
    }

    /// The checkpoint test failed.
    pub fn is_cancelled(&self) -> bool {
        self.0.check().is_err()
    }

    /// The scope was cancelled itself.
    pub fn cancel_called(&self) -> bool {
        self.0.lock().cancel_called
    }

    /// The scope is shielded.
    pub fn shield(&self) -> bool {
        self.0.lock().shield
    }

    /// The scope is linked under a parent.
    pub fn has_parent(&self) -> bool {
        self.0.parent().is_some()
    }

    /// How many children are linked under this scope.
    pub fn children(&self) -> usize {
        self.0.snapshot().children.len()
    }

    /// How many references to the node exist (handles and tree links).
    pub fn references(&self) -> usize {
        Arc::strong_count(&self.0)
    }

    /// `Node::listen`: fires after the next change of the state.
    pub fn listen(&self) -> impl Future<Output = ()> + Send + Unpin + 'static {
        self.0.listen()
    }

    /// The crate's own waiter (`CancelHandle::cancelled`, built on
    /// `cancel::scope_wait::Wait`): ready once the node is effectively cancelled.
    pub fn cancelled(&self) -> crate::HandleCancelled {
        crate::CancelHandle::from_node(Arc::clone(&self.0)).cancelled()
    }
}

/// A scope's own node as its owner holds it (a `CancelScope` run): entered
/// with `Node::enter_owned`, exited with `Node::exit_owned` (without its own
/// lock when nobody else refers to it then), no other reference kept.
pub struct OwnedScope {
    slot: Option<Arc<Node>>,
    link: Option<crate::cancel::tree::Link>,
}

impl fmt::Debug for OwnedScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedScope").finish_non_exhaustive()
    }
}

impl OwnedScope {
    /// Enters a new scope under `parent`.
    pub fn enter(parent: Option<&Scope>) -> OwnedScope {
        let mut node = Node::new(None, false, Kind::Scope(Location::caller()));
        let link = Node::enter_owned(&mut node, parent.map(|parent| Arc::clone(&parent.0)), None);
        OwnedScope {
            slot: Some(node),
            link,
        }
    }

    /// The cached effective state (one load).
    pub fn state(&self) -> u64 {
        self.slot.as_ref().map_or(NEVER, |node| node.state())
    }

    /// Moves the scope under `parent`, as its owner does when it is polled
    /// by another task (`Node::relink_owned`).
    pub fn relink(&mut self, parent: Option<&Scope>) {
        let Some(node) = &self.slot else {
            return;
        };
        Node::relink_owned(
            node,
            &mut self.link,
            parent.map(|parent| Arc::clone(&parent.0)),
        );
    }

    /// `Node::listen` on the scope's node.
    pub fn listen(&self) -> impl Future<Output = ()> + Send + Unpin + 'static {
        self.slot.as_ref().expect("entered").listen()
    }

    /// Exits the scope (`Node::exit_owned`).
    pub fn exit(mut self) {
        Node::exit_owned(&mut self.slot, self.link.take());
        assert!(self.slot.is_none(), "exit_owned empties its slot");
    }
}

/// The count a nursery keeps of its counted parallel children
/// (`spawn::Parallel`), driven the way the children and the nursery future
/// drive it.
pub struct ParallelCount(Arc<crate::spawn::Parallel<std::io::Error>>);

impl fmt::Debug for ParallelCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParallelCount").finish_non_exhaustive()
    }
}

impl ParallelCount {
    /// A count of `children` started children.
    pub fn new(children: usize) -> ParallelCount {
        let parallel = Arc::new(crate::spawn::Parallel::default());
        for _ in 0..children {
            parallel.started();
        }
        ParallelCount(parallel)
    }

    /// Counts in one more started child (the caller holds the lock every
    /// start takes, as `TaskTable::start_remote` does).
    pub fn start(&self) {
        self.0.started();
    }

    /// Children started and not finished.
    pub fn running(&self) -> usize {
        self.0.running()
    }

    /// What a child does when it ends: succeeded, or failed.
    pub fn finish(&self, failed: bool) {
        let outcome = if failed {
            Err(std::io::Error::other("boom"))
        } else {
            Ok(())
        };
        self.0.finish_with(crate::TaskInfo::new(None), outcome);
    }

    /// What the nursery future does in each poll: registers its waker,
    /// reads the count, takes the failures. `Ready(failures taken)` once
    /// none runs.
    pub fn poll_nursery(&self, cx: &mut Context<'_>, failures: &mut usize) -> Poll<()> {
        self.0.register(cx.waker());
        let running = self.0.running();
        *failures += self.0.take_outcomes().len();
        if running == 0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

type Child = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A nursery's child set (`nursery::children`), driven the way the
/// nursery future drives it.
pub struct ChildSet {
    wakeup: Arc<Wakeup>,
    children: Children<Child>,
    incoming: Vec<(Child, crate::TaskInfo)>,
}

impl fmt::Debug for ChildSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSet").finish_non_exhaustive()
    }
}

impl Default for ChildSet {
    fn default() -> Self {
        let wakeup = Arc::new(Wakeup::default());
        let table = TaskTable::new(Location::caller());
        ChildSet {
            children: Children::new(Arc::clone(&wakeup), Vec::new(), table, Default::default()),
            wakeup,
            incoming: Vec::new(),
        }
    }
}

impl ChildSet {
    /// Adds a child; the next poll admits it.
    pub fn spawn(&mut self, child: impl Future<Output = ()> + Send + 'static) {
        self.incoming
            .push((Box::pin(child), crate::TaskInfo::new(None)));
    }

    /// One poll of the nursery future's loop: registers the poller's
    /// waker, polls the children woken since the last poll (through the
    /// ready queue, then those woken during their own poll with the probe),
    /// then admits and polls the new ones; wakes itself if some child was
    /// woken during its poll. Ready once no child is left.
    pub fn poll_children(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.wakeup.waker.register(cx.waker());
        let mut batch = self.children.take_woken();
        for &key in &batch {
            if key != BODY {
                let _ = crate::context::here(|here| self.children.poll(key, here));
            }
        }
        self.children.poll_requeued(|children, key| {
            let _ = crate::context::here(|here| children.poll(key, here));
        });
        batch.clear();
        self.children.admit(self.incoming.drain(..), &mut batch);
        for &key in &batch {
            let _ = crate::context::here(|here| self.children.poll_admitted(key, here));
        }
        self.children.recycle(batch);
        if self.children.is_empty() {
            Poll::Ready(())
        } else {
            if self.children.any_requeued() {
                cx.waker().wake_by_ref();
            }
            Poll::Pending
        }
    }
}

/// The hand-off between the signal watcher and `run` (`signal::Shutdown`):
/// the first signal recorded by the watcher thread, the root scope set by
/// `run` once it exists, the scopes of runs that defer to it.
pub struct Shutdown(Arc<crate::signal::Shutdown>);

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown").finish_non_exhaustive()
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown(crate::signal::Shutdown::new(
            crate::signal::DEFAULT_GRACE_PERIOD,
        ))
    }
}

impl Shutdown {
    /// `Shutdown::record`: the watcher's half of `interrupt` (what it does
    /// with the first signal before it prints anything).
    pub fn record(&self, signal: i32) -> bool {
        self.0.record(signal)
    }

    /// `Shutdown::set_scope`: `run` hands over its root scope.
    pub fn set_scope(&self, scope: &Scope) {
        self.0
            .set_scope(crate::CancelHandle::from_node(Arc::clone(&scope.0)));
    }

    /// `Shutdown::defer`: a run that defers to this owner adds its scope.
    pub fn defer(&self, scope: &Scope) -> usize {
        self.0
            .defer(crate::CancelHandle::from_node(Arc::clone(&scope.0)))
    }

    /// The number of the first signal recorded, if any.
    pub fn signal(&self) -> Option<i32> {
        self.0.signal().map(crate::Signal::number)
    }
}
