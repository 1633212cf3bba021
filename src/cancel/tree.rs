//! The cancel status tree.
//!
//! Every entered cancel scope (and every nursery, which owns one) is a [`Node`].
//! A node links to its parent (the scope that was current when it was entered)
//! and lists its children. Each node caches its **effective state** in one
//! atomic `u64`, so that a checkpoint costs one load however deep it is nested:
//!
//! * `CANCELLED` (0): the scope is effectively cancelled;
//! * `NEVER` (`u64::MAX`): no deadline applies and nothing is cancelled;
//! * `FAR` (`u64::MAX - 1`): the earliest deadline that applies is too far
//!   away to encode; it is compared as an instant (`deadline_passed`);
//! * anything else: the earliest deadline (see `clock`) that applies.
//!
//! # Invariants
//!
//! 1. `state == effective(inner, parent.state)` where `effective` is
//!    `CANCELLED` if `cancel_called`, else `min(own deadline, parent state)`,
//!    the parent's state counting as `NEVER` when the node is shielded or has no
//!    parent. This holds whenever no update is in flight.
//! 2. A node's `state` is written only while its own `inner` lock is held, and
//!    the node's children are read under that same lock. So a child linked
//!    after a parent's write sees the new value when it computes its own, and a
//!    child linked before is in the list the writer pushes to. The
//!    exceptions, `enter_owned` and `exit_owned`: a node nobody else refers
//!    to yet is set up without its own lock, its state computed and stored
//!    under its parent's lock just before it is inserted into the parent's
//!    list, which is the only way anyone else can reach it; and a node taken
//!    out of that list (under the parent's lock) that nobody else refers to
//!    then (`Arc::get_mut`) is exited without it. A thread's spare node
//!    (`Node::scope`) is such a node, reset, and enters the same way.
//! 3. No thread ever holds two node locks at once: updates walk the tree with
//!    an explicit work list, one lock at a time, so they cannot deadlock, and
//!    they never recurse, so 10,000-deep chains are fine.
//! 4. A node unlinks itself from its parent (and drops its parent reference)
//!    when its scope exits, so the parent/child reference cycle is broken on
//!    every exit path and dropping a long chain never recurses.
//! 5. `waiters` are notified after every state change, outside the lock;
//!    waiters listen, re-check, then sleep, so no change is missed.
//! 6. `unannounced` counts the state changes made (under the lock) whose
//!    waiters have not all been notified yet. When it reads 0, every waiter
//!    that listened before the current state was stored has been woken: a
//!    task whose hatchery waits listen through a combinator has been told.
//!    Only then may an owner conclude that a task which did not park at a
//!    hatchery await is parked where the cancellation cannot reach it
//!    (`cancel::foreign`).

use std::collections::HashMap;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use slab::Slab;

use super::listeners::Waiters;
use super::reason::CancelReason;
use crate::clock::{self, CANCELLED, FAR, NEVER};
use crate::error::Cancelled;
use crate::live::{LISTENERS, SCOPES, Token};
use crate::sync::Recover;
use crate::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use crate::sync::{Arc, Mutex, MutexGuard};
use crate::task::{Flags, TaskInfo};

/// What a node is, for the report.
#[derive(Clone)]
pub(crate) enum Kind {
    /// A [`CancelScope`](crate::CancelScope) entered at this location.
    Scope(&'static Location<'static>),
    /// A nursery's scope, with the nursery's children.
    Nursery(Arc<dyn Tasks>),
    /// The scope of a task being started with `start()`.
    Starting,
}

/// The children a nursery's node carries, as the report reads them. The
/// nursery's task table (a higher layer) implements it; the tree only holds
/// it.
pub(crate) trait Tasks: Send + Sync {
    /// Where the nursery was opened.
    fn location(&self) -> &'static Location<'static>;
    /// Failures of supervised children their handlers took.
    fn handled_failures(&self) -> usize;
    /// Calls `each` with the identity, admission time and notes of every
    /// child (no user code runs meanwhile; `each` must not call any).
    fn for_each(&self, each: &mut dyn FnMut(TaskInfo, Instant, Flags));
}

/// What the report copies out of a node (one lock, no user code).
pub(crate) struct NodeSnapshot {
    pub(crate) kind: Kind,
    pub(crate) effectively_cancelled: bool,
    pub(crate) reason: Option<CancelReason>,
    pub(crate) shield: bool,
    pub(crate) deadline: Option<Instant>,
    pub(crate) children: Vec<Arc<Node>>,
}

pub(crate) struct Node {
    state: AtomicU64,
    inner: Mutex<Inner>,
    /// The tasks waiting for this node's state to change.
    waiters: Waiters,
    /// Someone listened at least once. Until then a state change need not
    /// take the waiters' lock (invariant 5 keeps holding through the fences
    /// in `listen` and `recompute_locked`).
    listened: AtomicBool,
    /// State changes whose waiters are still being notified (invariant 6).
    unannounced: AtomicUsize,
    /// What this node is, for the report.
    kind: Kind,
    /// `None` while the node is a thread's spare (`Node::scope`).
    _live: Option<Token<SCOPES>>,
}

/// A listener to a node's state changes, counted while it exists: ready
/// once the state changed after it was made.
pub(crate) struct Listener {
    node: Arc<Node>,
    key: usize,
    _live: Token<LISTENERS>,
}

impl Listener {
    /// The node listened to.
    pub(crate) fn node(&self) -> &Arc<Node> {
        &self.node
    }
}

impl Future for Listener {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.node.waiters.poll(self.key, cx)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.node.waiters.remove(self.key);
    }
}

pub(crate) struct Inner {
    parent: Option<Arc<Node>>,
    key_in_parent: usize,
    children: Slab<Arc<Node>>,
    pub(crate) cancel_called: bool,
    pub(crate) reason: Option<CancelReason>,
    pub(crate) deadline: Option<Instant>,
    deadline_nanos: u64,
    pub(crate) shield: bool,
    pub(crate) cancelled_caught: bool,
    /// The scope has been entered. Before, a deadline that passes cancels
    /// it only when someone looks (`cancel_called`, as trio's property
    /// does): moving it later before entry undoes nothing that was not
    /// seen (trio checks it at entry).
    entered: bool,
    /// The scope has exited: its deadline no longer counts (trio: a scope
    /// never becomes `cancel_called` after it exited).
    exited: bool,
    /// The tasks (`context` invariant 4) holding pending hatchery awaits
    /// inside a combinator, with how many each (`cancel::foreign::Hold`).
    /// A map: a nursery may have thousands of children holding at once.
    holds: Option<HashMap<usize, u32>>,
}

#[cfg(not(hatchery_loom))]
thread_local! {
    /// This thread's spare scope node (`Node::scope`): not linked, nobody
    /// listening, counted by no live counter.
    static SPARE: std::cell::Cell<Option<Arc<Node>>> = const { std::cell::Cell::new(None) };
}

/// Where an owner linked its scope's node (`Node::enter_owned`), so that it
/// can unlink it without taking the node's own lock (`Node::exit_owned`).
pub(crate) struct Link {
    parent: Arc<Node>,
    key: usize,
}

impl Inner {
    /// Takes `child` out of this node's children, if it is still there
    /// under `key` (an owner that unlinked it already may have seen the key
    /// reused by a sibling since).
    fn remove_child(&mut self, key: usize, child: &Node) -> Option<Arc<Node>> {
        let listed = self
            .children
            .get(key)
            .is_some_and(|listed| std::ptr::eq(Arc::as_ptr(listed), child));
        listed.then(|| self.children.remove(key))
    }

    fn effective(&self) -> u64 {
        if self.cancel_called {
            return CANCELLED;
        }
        if self.exited {
            return NEVER;
        }
        let inherited = match (&self.parent, self.shield) {
            (Some(parent), false) => parent.state.load(Ordering::Acquire),
            _ => NEVER,
        };
        self.deadline_nanos.min(inherited)
    }

    fn own_deadline_passed(&self, now: u64) -> bool {
        match self.deadline_nanos {
            _ if self.exited => false,
            NEVER => false,
            FAR => self
                .deadline
                .is_some_and(|deadline| clock::now() >= deadline),
            deadline => now >= deadline,
        }
    }

    /// Lowers the own deadline to `deadline` (never raises it).
    fn lower_deadline(&mut self, deadline: Instant) {
        let lowered = self
            .deadline
            .map_or(deadline, |current| current.min(deadline));
        self.deadline = Some(lowered);
        self.deadline_nanos = clock::to_nanos(lowered);
    }

    /// Records a cancellation; the first reason wins.
    fn mark_cancelled(&mut self, reason: CancelReason) {
        self.cancel_called = true;
        self.reason.get_or_insert(reason);
    }
}

impl Node {
    pub(crate) fn new(deadline: Option<Instant>, shield: bool, kind: Kind) -> Arc<Node> {
        Arc::new(Node {
            state: AtomicU64::new(NEVER),
            inner: Mutex::new(Inner {
                parent: None,
                key_in_parent: 0,
                children: Slab::new(),
                cancel_called: false,
                reason: None,
                deadline,
                deadline_nanos: deadline.map_or(NEVER, clock::to_nanos),
                shield,
                cancelled_caught: false,
                entered: false,
                exited: false,
                holds: None,
            }),
            waiters: Waiters::default(),
            listened: AtomicBool::new(false),
            unannounced: AtomicUsize::new(0),
            kind,
            _live: Some(Token::new()),
        })
    }

    /// A node for a [`CancelScope`](crate::CancelScope) (or another scope of
    /// hatchery's own) made at `location`, shielded if `shield`:
    /// the thread's spare node, left by the last scope that exited on this
    /// thread (`exit_owned`) with nothing else referring to it, if there is
    /// one. A program that enters timeout after timeout (a request's
    /// deadline around a socket read, say) allocates no node for them once
    /// warm; a handle kept past a scope keeps that scope's node for itself.
    pub(crate) fn scope(location: &'static Location<'static>, shield: bool) -> Arc<Node> {
        #[cfg(not(hatchery_loom))]
        if let Some(mut spare) = SPARE.try_with(std::cell::Cell::take).ok().flatten()
            && let Some(node) = Arc::get_mut(&mut spare)
        {
            node.inner.get_mut().recover().shield = shield;
            node.kind = Kind::Scope(location);
            node._live = Some(Token::new());
            return spare;
        }
        Node::new(None, shield, Kind::Scope(location))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding this lock, but never let poisoning turn a
        // cancel into a second panic.
        self.inner.lock().recover()
    }

    /// The scope this one was entered in, while it is entered.
    pub(crate) fn parent(&self) -> Option<Arc<Node>> {
        self.lock().parent.clone()
    }

    /// Copies out what the report shows of this node (report invariant 1:
    /// one lock, no user code).
    pub(crate) fn snapshot(&self) -> NodeSnapshot {
        let inner = self.lock();
        // Not `is_cancelled`: recording an expiry would take this lock again.
        let state = self.state();
        NodeSnapshot {
            kind: self.kind.clone(),
            effectively_cancelled: match state {
                CANCELLED => true,
                NEVER => false,
                FAR => false, // too far away to have passed: no walk under this lock
                deadline => clock::now_nanos() >= deadline,
            },
            reason: inner.reason.clone(),
            shield: inner.shield,
            deadline: inner.deadline,
            children: inner
                .children
                .iter()
                .map(|(_, child)| Arc::clone(child))
                .collect(),
        }
    }

    /// The effective state (see the module docs). Inlined: every checkpoint
    /// reads it (it would be a call across the crate boundary otherwise).
    #[inline]
    pub(crate) fn state(&self) -> u64 {
        self.state.load(Ordering::Acquire)
    }

    pub(crate) fn listen(self: &Arc<Self>) -> Listener {
        self.listened.store(true, Ordering::Relaxed);
        // Pairs with the fence in `recompute_locked`: either the updater sees
        // `listened`, or the waiter's re-check after listening sees the state.
        fence(Ordering::SeqCst);
        Listener {
            key: self.waiters.listen(),
            node: Arc::clone(self),
            _live: Token::new(),
        }
    }

    /// `listen`, with `waker` registered at once (`Waiters::listen_with`):
    /// the caller need not poll the listener before it re-checks the state
    /// and returns `Pending`.
    pub(crate) fn listen_with(self: &Arc<Self>, waker: &Waker) -> Listener {
        self.listened.store(true, Ordering::Relaxed);
        // As in `listen`.
        fence(Ordering::SeqCst);
        Listener {
            key: self.waiters.listen_with(waker),
            node: Arc::clone(self),
            _live: Token::new(),
        }
    }

    /// Whether the scope is shielded.
    pub(crate) fn is_shielded(&self) -> bool {
        self.lock().shield
    }

    /// Records a hold of `task` (`cancel::foreign::Hold`).
    pub(crate) fn hold(&self, task: usize) {
        *self
            .lock()
            .holds
            .get_or_insert_with(HashMap::new)
            .entry(task)
            .or_insert(0) += 1;
    }

    /// Ends one hold of `task`.
    pub(crate) fn release(&self, task: usize) {
        let mut inner = self.lock();
        if let Some(holds) = &mut inner.holds
            && let Some(count) = holds.get_mut(&task)
        {
            *count -= 1;
            if *count == 0 {
                holds.remove(&task);
            }
        }
    }

    /// Ends a hold of `task` whose await moved away (polled by another task
    /// now, or in another scope): its owner kept the task for that await's
    /// wake, which will not come; the node's waiters are told so that its
    /// owner looks at the task again.
    pub(crate) fn release_moved(&self, task: usize) {
        self.release(task);
        fence(Ordering::SeqCst);
        if self.listened.load(Ordering::Relaxed) {
            self.waiters.notify();
        }
    }

    /// Whether `task` holds a pending hatchery await in this scope (any
    /// task, if `None`: the scope's own single task).
    pub(crate) fn holds(&self, task: Option<usize>) -> bool {
        let inner = self.lock();
        let Some(holds) = &inner.holds else {
            return false;
        };
        match task {
            None => !holds.is_empty(),
            Some(task) => holds.contains_key(&task),
        }
    }

    /// Whether every waiter has been told of the current state (invariant 6).
    pub(crate) fn announced(&self) -> bool {
        self.unannounced.load(Ordering::Acquire) == 0
    }

    /// The checkpoint test: one atomic load on the fast path.
    #[inline]
    pub(crate) fn check(&self) -> Result<(), Cancelled> {
        match self.state() {
            NEVER => Ok(()),
            CANCELLED => Err(Cancelled),
            deadline => self.check_deadline(deadline),
        }
    }

    #[cold]
    fn check_deadline(&self, deadline: u64) -> Result<(), Cancelled> {
        let now = clock::now_nanos();
        if !self.deadline_passed(deadline, now) {
            return Ok(());
        }
        self.record_expired(now);
        match self.state() {
            CANCELLED => Err(Cancelled),
            state if self.deadline_passed(state, now) => Err(Cancelled),
            // Someone moved the deadline later in the meantime.
            _ => Ok(()),
        }
    }

    /// Whether the effective deadline `state` (read from this node) has
    /// passed at `now` (see `clock::now_nanos`).
    pub(crate) fn deadline_passed(&self, state: u64, now: u64) -> bool {
        match state {
            CANCELLED => true,
            NEVER => false,
            FAR => self
                .deadline_instant(FAR)
                .is_some_and(|deadline| clock::now() >= deadline),
            deadline => now >= deadline,
        }
    }

    /// The instant of the effective deadline `state` (read from this node);
    /// `None` without one. For `FAR`, the scopes from here up to the first
    /// shield are asked for their own deadlines, one lock at a time.
    pub(crate) fn deadline_instant(&self, state: u64) -> Option<Instant> {
        match state {
            NEVER => None,
            FAR => {
                let mut earliest: Option<Instant> = None;
                let mut next: Option<Arc<Node>> = None;
                loop {
                    let node = next.as_deref().unwrap_or(self);
                    let inner = node.lock();
                    if let Some(deadline) = inner.deadline.filter(|_| !inner.exited) {
                        earliest = Some(earliest.map_or(deadline, |e| e.min(deadline)));
                    }
                    match (&inner.parent, inner.shield) {
                        (Some(parent), false) => {
                            let parent = Arc::clone(parent);
                            drop(inner);
                            next = Some(parent);
                        }
                        _ => return earliest,
                    }
                }
            }
            nanos => Some(clock::from_nanos(nanos)),
        }
    }

    /// A checkpoint observed an expired effective deadline: mark every scope
    /// whose own deadline passed, from here up to the first shield, as
    /// cancelled by its deadline. This makes expiry sticky (moving a deadline
    /// later no longer un-cancels a task that already saw `Cancelled`), and
    /// tells the catching rule which scope it belongs to.
    pub(crate) fn record_expired(&self, now: u64) {
        let mut next: Option<Arc<Node>> = None;
        let mut work = Vec::new();
        loop {
            let node = next.as_deref().unwrap_or(self);
            let (parent, shield) = {
                let mut inner = node.lock();
                if !inner.cancel_called && inner.own_deadline_passed(now) {
                    inner.mark_cancelled(CancelReason::Deadline);
                    node.recompute_locked(inner, &mut work);
                    // Re-lock to read the links after the update released it.
                    let inner = node.lock();
                    (inner.parent.clone(), inner.shield)
                } else {
                    (inner.parent.clone(), inner.shield)
                }
            };
            push_down(&mut work);
            match parent {
                Some(parent) if !shield => next = Some(parent),
                _ => return,
            }
        }
    }

    /// Cancels this scope (idempotent; the first reason recorded wins).
    pub(crate) fn cancel(&self, reason: CancelReason) {
        let mut inner = self.lock();
        // A deadline that passed unseen cancelled the scope at that instant
        // (trio's run loop marks it then): its reason stays the first.
        if !inner.cancel_called
            && inner.entered
            && inner.deadline_nanos != NEVER
            && inner.own_deadline_passed(clock::now_nanos())
        {
            inner.mark_cancelled(CancelReason::Deadline);
        }
        inner.mark_cancelled(reason);
        self.update_locked(inner);
    }

    pub(crate) fn set_deadline(&self, deadline: Option<Instant>) {
        let mut inner = self.lock();
        // A deadline that has passed is an event at that instant, as in
        // trio: it cancelled the scope, whether or not a checkpoint saw it
        // yet, and moving it later does not undo that. (Before the scope is
        // entered, trio looks at its deadline only at the entry.)
        if !inner.cancel_called && inner.entered && inner.own_deadline_passed(clock::now_nanos()) {
            inner.mark_cancelled(CancelReason::Deadline);
        }
        inner.deadline = deadline;
        inner.deadline_nanos = deadline.map_or(NEVER, clock::to_nanos);
        self.update_locked(inner);
    }

    pub(crate) fn set_shield(&self, shield: bool) {
        let mut inner = self.lock();
        inner.shield = shield;
        self.update_locked(inner);
    }

    /// Recomputes this node's state and pushes any change down the subtree.
    fn update_locked(&self, inner: MutexGuard<'_, Inner>) {
        let mut work = Vec::new();
        self.recompute_locked(inner, &mut work);
        push_down(&mut work);
    }

    /// Recomputes the state under the lock (invariant 2); if it changed, queues
    /// the children for recomputation and wakes this node's waiters.
    fn recompute_locked(&self, inner: MutexGuard<'_, Inner>, work: &mut Vec<Arc<Node>>) {
        let new = inner.effective();
        // Only written under this lock (invariant 2): stable while it is held.
        let old = self.state.load(Ordering::Relaxed);
        if new != old {
            /// Ends the announcement however `notify` ends: a waker that
            /// panics must not leave the node unannounced for good (owners
            /// would retry forever).
            struct Announced<'n>(&'n AtomicUsize);
            impl Drop for Announced<'_> {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, Ordering::Release);
                }
            }
            // Invariant 6: counted before the new state can be seen.
            self.unannounced.fetch_add(1, Ordering::Relaxed);
            let _announced = Announced(&self.unannounced);
            self.state.store(new, Ordering::Release);
            work.extend(inner.children.iter().map(|(_, child)| Arc::clone(child)));
            drop(inner);
            fence(Ordering::SeqCst);
            if self.listened.load(Ordering::Relaxed) {
                self.waiters.notify();
            }
        }
    }

    /// Links this node under `parent` (or makes it a root) and computes its
    /// state. Called once, when the scope is entered.
    pub(crate) fn link(self: &Arc<Self>, parent: Option<&Arc<Node>>) {
        self.enter(parent, None);
    }

    /// Links this node (see `link`) and, in the same locked step, lowers its
    /// deadline to `deadline` (a relative timeout fixed at entry). Returns
    /// the node's key in its parent's list.
    pub(crate) fn enter(
        self: &Arc<Self>,
        parent: Option<&Arc<Node>>,
        deadline: Option<Instant>,
    ) -> Option<usize> {
        let key = parent.map(|parent| parent.lock().children.insert(Arc::clone(self)));
        let mut inner = self.lock();
        inner.entered = true;
        if let (Some(parent), Some(key)) = (parent, key) {
            inner.parent = Some(Arc::clone(parent));
            inner.key_in_parent = key;
        }
        if let Some(deadline) = deadline {
            inner.lower_deadline(deadline);
        }
        self.update_locked(inner);
        key
    }

    /// `enter` for a scope's own node, which may have no other owner yet (no
    /// handle was taken): then it is set up without its own lock, and no
    /// waiter can be listening (invariant 2's exception). This is what makes
    /// entering a scope cheap. Returns where the node was linked, for
    /// `exit_owned`.
    pub(crate) fn enter_owned(
        this: &mut Arc<Node>,
        parent: Option<Arc<Node>>,
        deadline: Option<Instant>,
    ) -> Option<Link> {
        let Some(node) = Arc::get_mut(this) else {
            let key = this.enter(parent.as_ref(), deadline);
            return parent.zip(key).map(|(parent, key)| Link { parent, key });
        };
        let inner = node.inner.get_mut().recover();
        inner.entered = true;
        if let Some(deadline) = deadline {
            inner.lower_deadline(deadline);
        }
        let Some(parent) = parent else {
            node.state.store(inner.effective(), Ordering::Release);
            return None;
        };
        let mut siblings = parent.lock();
        let entry = siblings.children.vacant_entry();
        let key = entry.key();
        inner.key_in_parent = key;
        inner.parent = Some(Arc::clone(&parent));
        // The parent's state cannot change while its lock is held; any later
        // change finds this node in its list.
        node.state.store(inner.effective(), Ordering::Release);
        entry.insert(Arc::clone(this));
        drop(siblings);
        Some(Link { parent, key })
    }

    /// Links a node its owner entered as a root (`enter_owned` without a
    /// parent) under `parent` after all, for `exit_owned` (`relink_owned`:
    /// a scope future first polled outside any scope). Its state is computed
    /// again with the parent's, as at entry (a shield lifted meanwhile
    /// through `current_scope()` now inherits the parent's cancellation,
    /// and its waiters are told).
    pub(crate) fn link_owned(this: &Arc<Node>, parent: Arc<Node>) -> Link {
        let key = this.enter(Some(&parent), None).expect("a parent was given");
        Link { parent, key }
    }

    /// For the owner of a scope entered with `enter_owned`, at each later
    /// poll: whether the scope is polled under another scope than the one
    /// it is linked under (`current`, the poller's; no lock, no count).
    pub(crate) fn moved(link: Option<&Link>, current: Option<&Arc<Node>>) -> bool {
        match (link, current) {
            (Some(link), Some(current)) => !Arc::ptr_eq(&link.parent, current),
            (None, None) => false,
            _ => true,
        }
    }

    /// Moves a scope entered with `enter_owned` under `parent`, the scope of
    /// whoever polls it now (`moved`): a scope future handed to another
    /// task follows its new owner, whose cancellation and deadlines now
    /// reach it (and its subtree), while its old owner's no longer do.
    pub(crate) fn relink_owned(
        this: &Arc<Node>,
        link: &mut Option<Link>,
        parent: Option<Arc<Node>>,
    ) {
        this.refuse_own_subtree(parent.as_ref());
        if let Some(Link { parent: old, key }) = link.take() {
            let removed = old.lock().remove_child(key, this);
            drop(removed);
        }
        match parent {
            Some(parent) => *link = Some(Node::link_owned(this, parent)),
            None => {
                let mut inner = this.lock();
                inner.parent = None;
                this.update_locked(inner);
            }
        }
    }

    /// `relink_owned` for a node linked with `link`/`enter` (a nursery's).
    pub(crate) fn relink(self: &Arc<Self>, parent: Option<&Arc<Node>>) {
        self.refuse_own_subtree(parent);
        self.move_under(parent);
    }

    /// Moves this node from its parent's list into `parent`'s, then, under
    /// its own lock, swaps its parent and key and recomputes its state once:
    /// never a moment without a parent for its subtree to see (between two
    /// cancelled parents it stays cancelled, and nobody is woken for
    /// nothing). One lock at a time, as everywhere.
    fn move_under(self: &Arc<Self>, parent: Option<&Arc<Node>>) {
        let (old, key) = {
            let inner = self.lock();
            (inner.parent.clone(), inner.key_in_parent)
        };
        if let Some(old) = old {
            let removed = old.lock().remove_child(key, self);
            drop(removed);
        }
        match parent {
            Some(_) => {
                self.enter(parent, None);
            }
            None => {
                let mut inner = self.lock();
                let old = inner.parent.take();
                self.update_locked(inner);
                drop(old);
            }
        }
    }

    /// Panics if `parent` is this node or under it: the scope's future is
    /// polled by a task inside that scope (it awaits the scope it runs in),
    /// which can never finish, and linking it there would make the tree a
    /// cycle. One lock at a time, up the parents (a relink is rare).
    fn refuse_own_subtree(self: &Arc<Self>, parent: Option<&Arc<Node>>) {
        let mut up = parent.cloned();
        while let Some(node) = up {
            assert!(
                !Arc::ptr_eq(&node, self),
                "hatchery: a task inside a cancel scope (or nursery) awaits that scope's own \
                 future, which waits for the task: it can never finish. Await the scope from \
                 outside it"
            );
            up = node.lock().parent.clone();
        }
    }

    /// `exit` for a scope's own node, by the owner that entered it with
    /// `enter_owned`; leaves `slot` empty. The node is taken out of its
    /// parent's list first (under the parent's lock); if nobody else refers
    /// to it then (no handle, listener or child), nobody can reach it or
    /// listen any more, and the rest needs no lock of its own (invariant 2's
    /// exception, as at entry); such a node, unless it kept much memory
    /// (more than a chunk of waiters or 16 children's slots) or holds,
    /// becomes the thread's spare (`Node::scope`; never in the loom
    /// models). Otherwise as `exit`.
    pub(crate) fn exit_owned(slot: &mut Option<Arc<Node>>, link: Option<Link>) {
        let Some(mut this) = slot.take() else {
            return;
        };
        if let Some(Link { parent, key }) = link {
            let removed = parent.lock().remove_child(key, &this);
            drop(removed);
        }
        let Some(node) = Arc::get_mut(&mut this) else {
            return this.exit();
        };
        let inner = node.inner.get_mut().recover();
        inner.exited = true;
        inner.parent = None;
        #[cfg(not(hatchery_loom))]
        {
            // Nobody can listen any more: the waiter list is empty.
            let keep = inner.children.capacity() <= 16
                && inner.holds.is_none()
                && matches!(node.kind, Kind::Scope(_))
                && (!node.listened.load(Ordering::Relaxed) || node.waiters.reset_if_small());
            if keep {
                // Reset as `Node::new(None, false, ..)` leaves it.
                inner.cancel_called = false;
                inner.reason = None;
                inner.deadline = None;
                inner.deadline_nanos = NEVER;
                inner.cancelled_caught = false;
                inner.entered = false;
                inner.exited = false;
                node.state.store(NEVER, Ordering::Relaxed);
                node.listened.store(false, Ordering::Relaxed);
                node._live = None;
                // A thread being torn down keeps no spare.
                let _ = SPARE.try_with(|cell| cell.set(Some(this)));
                return;
            }
        }
        node.state.store(inner.effective(), Ordering::Release);
    }

    /// Removes this node from its parent's children (invariant 4). The state
    /// then reflects the scope's own cancellation and deadline only. (For
    /// the tests and loom models; the crate's own moves go through
    /// `move_under`.)
    #[cfg(any(test, hatchery_loom))]
    pub(crate) fn unlink(&self) {
        self.leave(false);
    }

    /// The scope exits: unlinked (invariant 4), and from now on its own
    /// deadline no longer counts, so that it never becomes cancelled after
    /// it exited. One locked step on the node, then one on its parent.
    pub(crate) fn exit(&self) {
        self.leave(true);
    }

    fn leave(&self, exit: bool) {
        let mut inner = self.lock();
        let parent = inner.parent.take();
        if exit {
            // A deadline that passed while the scope was entered cancelled
            // it, whether or not a checkpoint saw it (trio's run loop marks
            // it at the expiry): `cancel_called` says so after the exit too,
            // however late it is asked. (`exit_owned`'s own path skips this:
            // with no handle, nobody can ask.)
            if !inner.cancel_called
                && inner.deadline_nanos != NEVER
                && inner.own_deadline_passed(clock::now_nanos())
            {
                inner.mark_cancelled(CancelReason::Deadline);
            }
            inner.exited = true;
        } else if parent.is_none() {
            return;
        }
        let key = inner.key_in_parent;
        self.update_locked(inner);
        if let Some(parent) = parent {
            let removed = parent.lock().remove_child(key, self);
            drop(removed);
        }
    }

    /// Moves this node under a new parent (used when a starting task is handed
    /// to its nursery) and recomputes the subtree.
    pub(crate) fn reparent(self: &Arc<Self>, parent: &Arc<Node>) {
        self.move_under(Some(parent));
    }

    /// The catching rule, applied when the scope's body returned a cancellation:
    /// the scope catches it iff it was cancelled itself (explicitly or by its
    /// own deadline) and no cancelled scope outside it is visible to it.
    /// Records `cancelled_caught` (and a deadline expiry as `cancel_called`).
    pub(crate) fn exit_catches(&self) -> bool {
        let now = clock::now_nanos();
        let mut inner = self.lock();
        let own = inner.cancel_called || inner.own_deadline_passed(now);
        if !own {
            return false;
        }
        let outer_visible = match (&inner.parent, inner.shield) {
            (Some(parent), false) => {
                let parent = Arc::clone(parent);
                // One lock at a time (invariant 3): a far deadline walks.
                drop(inner);
                let visible = parent.deadline_passed(parent.state(), now);
                inner = self.lock();
                visible
            }
            _ => false,
        };
        if outer_visible {
            return false;
        }
        if !inner.cancel_called {
            inner.mark_cancelled(CancelReason::Deadline);
        }
        inner.cancelled_caught = true;
        true
    }

    /// `cancel_called`, counting a deadline that has passed (and recording it,
    /// so the answer never flips back).
    pub(crate) fn cancel_called(&self) -> bool {
        let mut inner = self.lock();
        if !inner.cancel_called && inner.own_deadline_passed(clock::now_nanos()) {
            inner.mark_cancelled(CancelReason::Deadline);
            self.update_locked(inner);
            return true;
        }
        inner.cancel_called
    }

    /// Why this scope is effectively cancelled: the reason of the nearest
    /// scope from here up to the first shield whose own cancellation (or
    /// deadline) cancelled it; `None` if none did. One lock at a time, up
    /// the parents.
    pub(crate) fn effective_reason(&self) -> Option<CancelReason> {
        let mut next: Option<Arc<Node>> = None;
        loop {
            let node = next.as_deref().unwrap_or(self);
            if node.cancel_called() {
                return node.lock().reason.clone();
            }
            let inner = node.lock();
            match (&inner.parent, inner.shield) {
                (Some(parent), false) => {
                    let parent = Arc::clone(parent);
                    drop(inner);
                    next = Some(parent);
                }
                _ => return None,
            }
        }
    }

    /// The effective cancellation, counting an expired effective deadline.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.check().is_err()
    }
}

/// Recomputes every queued node, queueing the children of those that changed.
fn push_down(work: &mut Vec<Arc<Node>>) {
    while let Some(node) = work.pop() {
        let inner = node.lock();
        node.recompute_locked(inner, work);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Break chains iteratively in case a scope was leaked and its children
        // still point up at it (invariant 4 covers every normal exit).
        let mut parent = self
            .inner
            .get_mut()
            .map_or(None, |inner| inner.parent.take());
        while let Some(node) = parent {
            parent = match Arc::try_unwrap(node) {
                Ok(mut node) => node
                    .inner
                    .get_mut()
                    .map_or(None, |inner| inner.parent.take()),
                Err(_) => None,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A small deterministic generator (xorshift), so failures replay.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    /// The effective state computed from scratch, walking up the parents.
    fn expected(node: &Node) -> u64 {
        let inner = node.lock();
        if inner.cancel_called {
            return CANCELLED;
        }
        let inherited = match (&inner.parent, inner.shield) {
            (Some(parent), false) => {
                let parent = Arc::clone(parent);
                drop(inner);
                let inherited = expected(&parent);
                return node.lock().deadline_nanos.min(inherited);
            }
            _ => NEVER,
        };
        inner.deadline_nanos.min(inherited)
    }

    /// Random operations on a forest; node `i` only ever hangs under a node
    /// with a smaller index, so the links stay a forest. Only nodes for which
    /// `mine` holds are moved (in the crate, only a node's owner links it).
    fn random_op(nodes: &[Arc<Node>], rng: &mut Rng, base: Instant, mine: impl Fn(usize) -> bool) {
        let i = rng.below(nodes.len());
        let node = &nodes[i];
        match rng.below(10) {
            0 => node.cancel(CancelReason::Explicit),
            1..=3 => node.set_deadline(match rng.below(3) {
                0 => None,
                k => Some(base + Duration::from_secs(3600 * k as u64 + rng.below(100) as u64)),
            }),
            4..=6 => node.set_shield(rng.below(2) == 0),
            _ if i > 0 && mine(i) => {
                let parent = &nodes[rng.below(i)];
                node.reparent(parent);
            }
            _ => {}
        }
    }

    fn forest(len: usize, rng: &mut Rng) -> Vec<Arc<Node>> {
        let mut nodes: Vec<Arc<Node>> = Vec::new();
        for i in 0..len {
            let node = Node::new(None, false, Kind::Starting);
            let parent = (i > 0).then(|| Arc::clone(&nodes[rng.below(i)]));
            node.link(parent.as_ref());
            nodes.push(node);
        }
        nodes
    }

    #[test]
    fn invariant_1_state_is_the_effective_state_after_every_operation() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let base = clock::now();
        for _round in 0..20 {
            let nodes = forest(40, &mut rng);
            for _ in 0..200 {
                random_op(&nodes, &mut rng, base, |_| true);
                for node in &nodes {
                    assert_eq!(node.state(), expected(node));
                }
            }
            for node in &nodes {
                node.unlink();
            }
        }
    }

    #[test]
    fn invariant_1_and_3_concurrent_updates_converge_without_deadlock() {
        let mut rng = Rng(7);
        let nodes = forest(64, &mut rng);
        let base = clock::now();
        std::thread::scope(|s| {
            for seed in 1..=4u64 {
                let nodes = &nodes;
                s.spawn(move || {
                    let mut rng = Rng(seed * 0x2545_F491_4F6C_DD1D);
                    for _ in 0..5_000 {
                        random_op(nodes, &mut rng, base, |i| i as u64 % 4 == seed - 1);
                    }
                });
            }
        });
        for node in &nodes {
            assert_eq!(node.state(), expected(node));
        }
        for node in &nodes {
            node.unlink();
        }
    }

    #[test]
    fn invariant_4_exit_breaks_the_parent_child_cycle() {
        let parent = Node::new(None, false, Kind::Starting);
        let child = Node::new(None, false, Kind::Starting);
        child.link(Some(&parent));
        assert_eq!(Arc::strong_count(&parent), 2); // held by the child
        assert_eq!(Arc::strong_count(&child), 2); // held by the parent
        child.unlink();
        assert_eq!(Arc::strong_count(&parent), 1);
        assert_eq!(Arc::strong_count(&child), 1);
    }

    /// `exit_owned` takes the node out of its parent's list first; if the
    /// node is not unique it then exits as `exit`, whose own removal must
    /// not take a sibling that was entered meanwhile under the same key.
    #[test]
    fn an_exit_after_the_owner_unlinked_leaves_a_sibling_under_the_same_key() {
        let parent = Node::new(None, false, Kind::Starting);
        parent.link(None);
        let mut child = Node::new(None, false, Kind::Starting);
        let link = Node::enter_owned(&mut child, Some(Arc::clone(&parent)), None);
        let key = link.as_ref().map(|link| link.key).unwrap();
        // What `exit_owned` does first, under the parent's lock.
        drop(parent.lock().remove_child(key, &child));
        let sibling = Node::new(None, false, Kind::Starting);
        let sibling_key = sibling.enter(Some(&parent), None);
        assert_eq!(sibling_key, Some(key), "the slab reuses the key");
        // The fallback when someone else still holds the node.
        child.exit();
        parent.cancel(CancelReason::Explicit);
        assert_eq!(sibling.state(), CANCELLED, "the sibling is still listed");
        assert_eq!(child.state(), NEVER, "the exited child follows nobody");
        sibling.unlink();
        drop(link);
    }

    #[test]
    fn invariant_5_a_state_change_notifies_listeners() {
        let node = Node::new(None, false, Kind::Starting);
        let listener = node.listen();
        node.set_deadline(Some(clock::now() + Duration::from_secs(60)));
        // The listener was notified, so waiting returns at once.
        futures_lite::future::block_on(listener);
    }

    #[test]
    fn an_observed_expiry_is_sticky_and_marks_only_expired_scopes() {
        let outer = Node::new(None, false, Kind::Starting);
        outer.link(None);
        let inner = Node::new(Some(clock::now()), false, Kind::Starting);
        inner.link(Some(&outer));
        assert_eq!(inner.check(), Err(Cancelled));
        assert!(inner.lock().cancel_called);
        assert_eq!(inner.lock().reason, Some(CancelReason::Deadline));
        assert!(!outer.lock().cancel_called);
        inner.set_deadline(None);
        assert_eq!(inner.check(), Err(Cancelled), "still cancelled");
        inner.unlink();
    }

    #[test]
    fn invariant_6_a_waker_that_panics_does_not_leave_the_node_unannounced() {
        struct Panics;
        impl std::task::Wake for Panics {
            fn wake(self: Arc<Self>) {
                panic!("a waker that panics");
            }
        }
        let node = Node::new(None, false, Kind::Starting);
        let mut listener = node.listen();
        let waker = std::task::Waker::from(Arc::new(Panics));
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut listener).poll(&mut cx).is_pending());
        let cancelled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            node.cancel(CancelReason::Explicit)
        }));
        assert!(
            cancelled.is_err(),
            "the waker's panic reached the canceller"
        );
        assert_eq!(node.state(), CANCELLED);
        assert!(node.announced(), "owners would retry forever");
    }
}
