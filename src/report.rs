//! The report of who is still running: a snapshot of the task tree.
//!
//! Every entered cancel scope is a node of the status tree (see
//! `cancel::tree`), and every nursery's node carries a [`TaskTable`]: the
//! name, spawn location and admission time of each child it still polls. A
//! [`Report`] walks that tree from a scope downwards, one lock at a time, and
//! copies out what a person debugging a stuck shutdown needs: the nursery
//! path, each task's name, location, age and whether it is running or
//! cleaning up (its scope is cancelled), which scopes are cancelled and why,
//! which shields hold, and which blocking closures are still running on a
//! thread of their own.
//!
//! # Invariants
//!
//! 1. A snapshot never holds two locks at once (the tree's invariant 3), and
//!    never calls user code while holding one: it can be taken from any
//!    thread, including while the program is shutting down.
//! 2. A nursery's table holds exactly the children of its slab: an entry is
//!    written when a child is admitted and removed when it finishes or is
//!    dropped (in both cases by the nursery future that owns the slab).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::panic::Location;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use slab::Slab;

use crate::CancelHandle;
use crate::cancel::CancelReason;
use crate::cancel::tree::Node;
use crate::chunked::ChunkVec;
use crate::clock;
use crate::context::{Flags, with_current};
use crate::sync::Recover;
use crate::task::TaskInfo;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().recover()
}

/// What a node of the status tree is, for the report.
#[derive(Clone)]
pub(crate) enum Kind {
    /// A [`CancelScope`](crate::CancelScope) entered at this location.
    Scope(&'static Location<'static>),
    /// A nursery opened at the table's location.
    Nursery(Arc<TaskTable>),
    /// The scope of a task being started with `start()`.
    Starting,
}

/// The children a nursery still polls, readable from any thread.
///
/// Compact, because every child pays for it: 4 bytes per key, in chunks that
/// never move. Children admitted in the same poll from the same spawn site
/// share one *cohort* (the site and the admission time, in milliseconds after
/// the table was made), and a key holds only its cohort's number; a loop that
/// spawns 10,000 children from one line makes a few hundred cohorts at most.
/// The names of the few named children are kept on the side.
///
/// Invariant: a cohort's `count` is the number of keys that refer to it; a
/// cohort with count 0 is on the free list (linked through `since`) and no
/// key refers to it.
pub(crate) struct TaskTable {
    location: &'static Location<'static>,
    epoch: Instant,
    tasks: Mutex<Registry>,
    /// Failures of supervised children that their handler took.
    handled: AtomicUsize,
}

/// The end of the free list of cohorts.
const NO_COHORT: u32 = u32::MAX;

/// Children admitted together from one spawn site.
struct Cohort {
    site: &'static Location<'static>,
    /// When they were admitted, in milliseconds after the table's epoch;
    /// for a free cohort, the next free one (`NO_COHORT`: none).
    since: u32,
    /// How many keys refer to this cohort.
    count: u32,
}

#[derive(Default)]
struct Registry {
    /// 1 + the cohort of the child under each key; 0: a free key.
    entries: ChunkVec<u32>,
    cohorts: Vec<Cohort>,
    /// The first cohort no key refers to, for reuse (a list linked through
    /// the free cohorts themselves: freeing allocates nothing).
    free: Option<u32>,
    /// The names of the named children, by key.
    names: HashMap<usize, Cow<'static, str>>,
    /// What the nursery noted of each child since its scope was cancelled
    /// (`context::Flags` bits), by key; grown only once something is noted.
    notes: ChunkVec<u8>,
}

impl Registry {
    /// Forgets the child under `key`; its cohort, if it was the last one.
    fn release(&mut self, key: usize) -> Option<&'static Location<'static>> {
        // Notes exist only once the nursery's scope was cancelled.
        if key < self.notes.len()
            && let Some(note) = self.notes.get_mut(key)
        {
            *note = 0;
        }
        let cohort = std::mem::take(self.entries.get_mut(key)?).checked_sub(1)?;
        let entry = &mut self.cohorts[cohort as usize];
        entry.count -= 1;
        let site = entry.site;
        if entry.count == 0 {
            entry.since = self.free.unwrap_or(NO_COHORT);
            self.free = Some(cohort);
        }
        Some(site)
    }

    fn take(&mut self, key: usize) -> Option<TaskInfo> {
        let location = self.release(key)?;
        Some(TaskInfo::from_parts(self.names.remove(&key), location))
    }

    /// A new cohort with one member.
    fn open(&mut self, site: &'static Location<'static>, since: u32) -> u32 {
        let cohort = Cohort {
            site,
            since,
            count: 1,
        };
        match self.free {
            Some(index) => {
                let next = self.cohorts[index as usize].since;
                self.free = (next != NO_COHORT).then_some(next);
                self.cohorts[index as usize] = cohort;
                index
            }
            None => {
                self.cohorts.push(cohort);
                // At most `NO_COHORT - 1`, and 1 + it fits a key's entry.
                u32::try_from(self.cohorts.len()).expect("fewer than 4 billion children") - 1
            }
        }
    }
}

impl TaskTable {
    pub(crate) fn new(location: &'static Location<'static>) -> Arc<Self> {
        Arc::new(TaskTable {
            location,
            epoch: clock::now(),
            tasks: Mutex::new(Registry::default()),
            handled: AtomicUsize::new(0),
        })
    }

    /// Counts a failure a supervised child's handler took.
    pub(crate) fn count_handled(&self) {
        self.handled.fetch_add(1, Ordering::Relaxed);
    }

    /// Starts admitting a batch of children (one lock for the batch).
    pub(crate) fn admit(&self) -> Admit<'_> {
        Admit {
            tasks: lock(&self.tasks),
            epoch: self.epoch,
            since: None,
            recent: [None; RECENT],
            next: 0,
        }
    }

    /// Removes a finished child's entry and returns its identity.
    pub(crate) fn remove(&self, key: usize) -> Option<TaskInfo> {
        lock(&self.tasks).take(key)
    }

    /// Removes the entries of children that finished without failing.
    pub(crate) fn remove_all(&self, keys: &[usize]) {
        if keys.is_empty() {
            return;
        }
        let mut tasks = lock(&self.tasks);
        let named = !tasks.names.is_empty();
        for &key in keys {
            tasks.release(key);
            if named {
                tasks.names.remove(&key);
            }
        }
    }

    /// Records what the nursery noted of these children in a poll after its
    /// scope was cancelled (`context::Flags` bits, added to earlier notes).
    pub(crate) fn note(&self, notes: &[(usize, u8)]) {
        if notes.is_empty() {
            return;
        }
        let mut tasks = lock(&self.tasks);
        for &(key, bits) in notes {
            // A child that left the table since is not noted.
            if tasks.entries.get(key).is_none_or(|&entry| entry == 0) {
                continue;
            }
            while tasks.notes.len() <= key {
                tasks.notes.push(0);
            }
            if let Some(note) = tasks.notes.get_mut(key) {
                *note |= bits;
            }
        }
    }

    /// Forgets every child (the nursery dropped them all).
    pub(crate) fn clear(&self) {
        let mut tasks = lock(&self.tasks);
        tasks.notes.clear();
        tasks.entries.clear();
        tasks.cohorts.clear();
        tasks.free = None;
        tasks.names.clear();
    }

    /// Calls `each` with the identity, admission time and notes of every
    /// child, in key order, under the table's lock (`each` must not call
    /// user code).
    fn for_each(&self, mut each: impl FnMut(TaskInfo, Instant, Flags)) {
        let tasks = lock(&self.tasks);
        for (key, &entry) in tasks.entries.iter().enumerate() {
            if let Some(cohort) = entry.checked_sub(1) {
                let cohort = &tasks.cohorts[cohort as usize];
                let name = tasks.names.get(&key).cloned();
                let since = self.epoch + Duration::from_millis(cohort.since.into());
                let note = Flags::from_bits(tasks.notes.get(key).copied().unwrap_or(0));
                each(TaskInfo::from_parts(name, cohort.site), since, note);
            }
        }
    }
}

/// A batch of admissions into a [`TaskTable`].
pub(crate) struct Admit<'t> {
    tasks: MutexGuard<'t, Registry>,
    epoch: Instant,
    since: Option<u32>,
    /// The cohorts opened by this batch, by site: a batch rarely has more
    /// than a few sites; past `RECENT`, the oldest is forgotten (its site,
    /// if it comes again, opens another cohort).
    recent: [Option<(&'static Location<'static>, u32)>; RECENT],
    /// Where the next cohort goes in `recent`.
    next: usize,
}

/// How many cohorts a batch of admissions remembers.
const RECENT: usize = 8;

impl Admit<'_> {
    pub(crate) fn insert(&mut self, key: usize, info: TaskInfo) {
        // One clock read per batch: a task's age counts from the poll that
        // admitted it, at most one poll after its spawn.
        let epoch = self.epoch;
        let since = *self.since.get_or_insert_with(|| {
            let ms = clock::now().saturating_duration_since(epoch).as_millis();
            u32::try_from(ms).unwrap_or(u32::MAX)
        });
        let (name, site) = info.into_parts();
        let tasks = &mut *self.tasks;
        let mut known = self.recent.iter().flatten();
        let cohort = match known.find(|(at, _)| std::ptr::eq(*at, site)) {
            Some(&(_, cohort)) => {
                tasks.cohorts[cohort as usize].count += 1;
                cohort
            }
            None => {
                let cohort = tasks.open(site, since);
                self.recent[self.next] = Some((site, cohort));
                self.next = (self.next + 1) % RECENT;
                cohort
            }
        };
        while tasks.entries.len() <= key {
            tasks.entries.push(0);
        }
        let entry = tasks.entries.get_mut(key).expect("grown above");
        debug_assert_eq!(*entry, 0, "a key is admitted only once it is free");
        *entry = cohort + 1;
        if let Some(name) = name {
            tasks.names.insert(key, name);
        }
    }
}

/// Blocking closures currently running on a thread (see `spawn_blocking`).
static BLOCKING: Mutex<Slab<BlockingRecord>> = Mutex::new(Slab::new());

struct BlockingRecord {
    info: TaskInfo,
    since: Instant,
    abandoned: Arc<AtomicBool>,
}

/// Lists a blocking closure in every report while its thread runs it.
pub(crate) struct BlockingEntry(usize);

impl BlockingEntry {
    /// Registers the closure; `abandoned` is set by its task if the task is
    /// dropped (the hard cancel) before the closure returns.
    pub(crate) fn new(info: TaskInfo, abandoned: Arc<AtomicBool>) -> Self {
        let record = BlockingRecord {
            info,
            since: clock::now(),
            abandoned,
        };
        BlockingEntry(lock(&BLOCKING).insert(record))
    }
}

impl Drop for BlockingEntry {
    fn drop(&mut self) {
        lock(&BLOCKING).try_remove(self.0);
    }
}

/// A snapshot of a task tree: who is still running, where they were spawned,
/// and what holds them. Printed by [`run`](crate::run) when a shutdown runs
/// out of grace; take one yourself with [`Report::capture`] (the whole tree
/// of the current task) or [`Report::of`] (one scope's subtree) and show it
/// anywhere — it implements `Display`.
///
/// # Examples
///
/// ```
/// use hatchery::{nursery, sleep_forever, Cancelled, Nursery, Report};
///
/// # futures::executor::block_on(async {
/// nursery(|n| async move {
///     n.named("sleeper").spawn(async { sleep_forever().await?; Ok(()) });
///     hatchery::checkpoint().await?; // let the child start
///     let report = Report::capture();
///     assert_eq!(report.tasks().len(), 1);
///     assert_eq!(report.tasks()[0].info().name(), Some("sleeper"));
///     assert!(report.to_string().contains("sleeper"));
///     n.cancel_scope().cancel();
///     Ok(())
/// })
/// .await
/// .unwrap();
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct Report {
    /// The scopes of the tree in preorder, for `Display`.
    items: Vec<Item>,
    tasks: Vec<TaskState>,
    scopes: Vec<ScopeState>,
    blocking: Vec<TaskState>,
}

/// One scope of the tree, in preorder: its depth, whether it is the last
/// of its siblings, and its tasks. Flat, so that neither formatting nor
/// dropping a report recurses (trees can be thousands of scopes deep).
#[derive(Debug, Clone)]
struct Item {
    scope: usize,
    depth: usize,
    last: bool,
    has_children: bool,
    tasks: Vec<usize>,
}

/// A scope still to visit in the report's walk.
struct Pending {
    node: Arc<Node>,
    depth: usize,
    last: bool,
}

/// Paths longer than this many scopes are shown with their middle elided.
const PATH_MAX: usize = 12;

/// A task in a [`Report`]: who it is, how long it has run, what it is doing.
///
/// ```
/// use hatchery::{nursery, sleep_forever, Cancelled, Nursery, Report};
///
/// # futures::executor::block_on(async {
/// nursery(|n| async move {
///     n.spawn(async { sleep_forever().await?; Ok(()) });
///     hatchery::checkpoint().await?;
///     let report = Report::capture();
///     let task = &report.tasks()[0];
///     assert!(task.info().location().file().ends_with(".rs"));
///     assert!(!task.is_cleaning_up());
///     assert!(task.path().starts_with("nursery at "));
///     n.cancel_scope().cancel();
///     Ok(())
/// })
/// .await
/// .unwrap();
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct TaskState {
    info: TaskInfo,
    age: Duration,
    cleaning_up: bool,
    note: Flags,
    path: String,
    abandoned: bool,
}

impl TaskState {
    /// The task's name and spawn location.
    ///
    /// ```
    /// # use hatchery::{nursery, sleep_forever, Cancelled, Nursery, Report};
    /// # futures::executor::block_on(async {
    /// # nursery(|n| async move {
    /// n.named("db").spawn(async { sleep_forever().await?; Ok(()) });
    /// hatchery::checkpoint().await?;
    /// assert_eq!(Report::capture().tasks()[0].info().name(), Some("db"));
    /// # n.cancel_scope().cancel();
    /// # Ok(())
    /// # }).await.unwrap();
    /// # });
    /// ```
    pub fn info(&self) -> &TaskInfo {
        &self.info
    }

    /// How long ago the task was spawned (for a blocking closure: since its
    /// thread started running it).
    ///
    /// ```
    /// # use hatchery::{nursery, sleep_forever, Cancelled, Nursery, Report};
    /// # futures::executor::block_on(async {
    /// # nursery(|n| async move {
    /// n.spawn(async { sleep_forever().await?; Ok(()) });
    /// hatchery::sleep(std::time::Duration::from_millis(20)).await?;
    /// assert!(Report::capture().tasks()[0].age() >= std::time::Duration::from_millis(5));
    /// # n.cancel_scope().cancel();
    /// # Ok(())
    /// # }).await.unwrap();
    /// # });
    /// ```
    pub fn age(&self) -> Duration {
        self.age
    }

    /// True if the task's scope is cancelled: it has been asked to stop and
    /// is (or should be) cleaning up.
    ///
    /// ```
    /// # use hatchery::{nursery, CancelScope, sleep, Cancelled, Nursery, Report};
    /// # use std::time::Duration;
    /// # futures::executor::block_on(async {
    /// # nursery(|n| async move {
    /// n.spawn(async {
    ///     // A cleanup that takes a while, behind a shield.
    ///     CancelScope::new().shield(true).run_typed(sleep(Duration::from_millis(50))).await?;
    ///     Ok(())
    /// });
    /// hatchery::checkpoint().await?;
    /// n.cancel_scope().cancel();
    /// assert!(Report::capture().tasks()[0].is_cleaning_up());
    /// # Ok(())
    /// # }).await.unwrap();
    /// # });
    /// ```
    pub fn is_cleaning_up(&self) -> bool {
        self.cleaning_up
    }

    /// True if the task was told of its scope's cancellation: one of its
    /// checkpoints returned `Cancelled` (or a scope or nursery it waits on
    /// is cancelled too). A task that was told and still runs is cleaning
    /// up; one that was not is behind a shield, runs elsewhere, or has not
    /// been polled since the cancel (it blocks its thread).
    ///
    /// ```
    /// # use hatchery::{nursery, CancelScope, sleep, Cancelled, Nursery, Report};
    /// # use std::time::Duration;
    /// # futures::executor::block_on(async {
    /// # nursery(|n| async move {
    /// n.spawn(async {
    ///     let slept = sleep(Duration::from_secs(3600)).await; // told here
    ///     // Its cleanup takes a while, behind a shield.
    ///     CancelScope::new().shield(true).run_typed(sleep(Duration::from_millis(50))).await?;
    ///     Ok(slept?)
    /// });
    /// hatchery::checkpoint().await?;
    /// n.cancel_scope().cancel();
    /// // The nursery polls the child once more, which tells it.
    /// CancelScope::new().shield(true).run_typed(sleep(Duration::from_millis(10))).await?;
    /// let report = Report::capture();
    /// let task = &report.tasks()[0];
    /// assert!(task.is_told());
    /// assert!(task.is_shielded());
    /// # Ok(())
    /// # }).await.unwrap();
    /// # });
    /// ```
    pub fn is_told(&self) -> bool {
        self.note.told()
    }

    /// True if the task waits behind a shield since its scope was
    /// cancelled: the cancellation does not reach that await.
    ///
    /// ```
    /// # use hatchery::{nursery, CancelScope, sleep, Cancelled, Nursery, Report};
    /// # use std::time::Duration;
    /// # futures::executor::block_on(async {
    /// # nursery(|n| async move {
    /// n.spawn(async {
    ///     CancelScope::new().shield(true).run_typed(sleep(Duration::from_millis(50))).await?;
    ///     Ok(())
    /// });
    /// hatchery::checkpoint().await?;
    /// n.cancel_scope().cancel();
    /// // The nursery polls the child once more, which tells it.
    /// CancelScope::new().shield(true).run_typed(sleep(Duration::from_millis(10))).await?;
    /// let report = Report::capture();
    /// let task = &report.tasks()[0];
    /// assert!(task.is_shielded() && !task.is_told());
    /// # Ok(())
    /// # }).await.unwrap();
    /// # });
    /// ```
    pub fn is_shielded(&self) -> bool {
        self.note.shielded()
    }

    /// The nursery path of the task: the scopes and nurseries that enclose
    /// it, outermost first, separated by ` > `.
    ///
    /// ```
    /// # use hatchery::{nursery, sleep_forever, Cancelled, Nursery, Report};
    /// # futures::executor::block_on(async {
    /// # nursery(|n| async move {
    /// n.spawn(async { sleep_forever().await?; Ok(()) });
    /// hatchery::checkpoint().await?;
    /// let path = Report::capture().tasks()[0].path().to_owned();
    /// assert!(path.starts_with("nursery at ") && path.contains(file!()));
    /// # n.cancel_scope().cancel();
    /// # Ok(())
    /// # }).await.unwrap();
    /// # });
    /// ```
    pub fn path(&self) -> &str {
        &self.path
    }

    /// For a blocking closure: true if its task was dropped (hard-cancelled)
    /// while the closure still ran, so that nobody waits for its thread.
    /// Always false for async tasks.
    ///
    /// ```
    /// let report = hatchery::Report::capture();
    /// assert!(report.blocking().iter().all(|task| !task.is_abandoned()));
    /// ```
    pub fn is_abandoned(&self) -> bool {
        self.abandoned
    }
}

/// A cancel scope (or nursery) in a [`Report`].
///
/// ```
/// use hatchery::{nursery, sleep_forever, Cancelled, Nursery, Report};
///
/// # futures::executor::block_on(async {
/// nursery(|n| async move {
///     n.spawn(async { sleep_forever().await?; Ok(()) });
///     hatchery::checkpoint().await?;
///     n.cancel_scope().cancel();
///     let report = Report::capture();
///     let scope = &report.scopes()[0];
///     assert!(scope.is_nursery());
///     assert!(scope.is_cancelled());
///     assert_eq!(scope.cancel_reason(), Some(&hatchery::CancelReason::Explicit));
///     Ok(())
/// })
/// .await
/// .unwrap();
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct ScopeState {
    label: String,
    nursery: bool,
    location: Option<&'static Location<'static>>,
    cancelled: bool,
    reason: Option<CancelReason>,
    shielded: bool,
    deadline: Option<Instant>,
    handled_failures: usize,
    path: String,
}

impl ScopeState {
    /// For a nursery: how many failures of its supervised children their
    /// handlers took (see [`TaskBuilder::on_failure`](crate::TaskBuilder::on_failure)).
    ///
    /// ```
    /// use hatchery::{nursery, Report};
    /// # futures::executor::block_on(async {
    /// nursery(|n| async move {
    ///     n.named("flaky")
    ///         .on_failure(|_failure| Ok(())) // handled: the siblings go on
    ///         .spawn(async { Err(hatchery::Error::msg("bad request")) });
    ///     hatchery::checkpoint().await?;
    ///     assert_eq!(Report::capture().scopes()[0].handled_failures(), 1);
    ///     Ok(())
    /// })
    /// .await
    /// .unwrap();
    /// # });
    /// ```
    pub fn handled_failures(&self) -> usize {
        self.handled_failures
    }

    /// True for a nursery's own scope, false for a
    /// [`CancelScope`](crate::CancelScope) or a starting task's scope.
    ///
    /// ```
    /// # use hatchery::{nursery, Cancelled, Nursery, Report};
    /// # futures::executor::block_on(async {
    /// # nursery(|_n| async move {
    /// assert!(Report::capture().scopes()[0].is_nursery());
    /// # Ok(())
    /// # }).await.unwrap();
    /// # });
    /// ```
    pub fn is_nursery(&self) -> bool {
        self.nursery
    }

    /// Where the scope was entered or the nursery opened, if known.
    ///
    /// ```
    /// # use hatchery::{nursery, Cancelled, Nursery, Report};
    /// # futures::executor::block_on(async {
    /// # nursery(|_n| async move {
    /// let scopes = Report::capture();
    /// assert_eq!(scopes.scopes()[0].location().unwrap().file(), file!());
    /// # Ok(())
    /// # }).await.unwrap();
    /// # });
    /// ```
    pub fn location(&self) -> Option<&'static Location<'static>> {
        self.location
    }

    /// True if the scope is effectively cancelled (its own cancel, its
    /// deadline, or an enclosing scope's, unless shielded).
    ///
    /// ```
    /// # use hatchery::{nursery, Cancelled, Nursery, Report};
    /// # futures::executor::block_on(async {
    /// # nursery(|_n| async move {
    /// assert!(!Report::capture().scopes()[0].is_cancelled());
    /// # Ok(())
    /// # }).await.unwrap();
    /// # });
    /// ```
    pub fn is_cancelled(&self) -> bool {
        self.cancelled
    }

    /// Why the scope itself was cancelled, if it was.
    ///
    /// ```
    /// # use hatchery::{nursery, Cancelled, Nursery, Report};
    /// # futures::executor::block_on(async {
    /// # nursery(|_n| async move {
    /// assert_eq!(Report::capture().scopes()[0].cancel_reason(), None);
    /// # Ok(())
    /// # }).await.unwrap();
    /// # });
    /// ```
    pub fn cancel_reason(&self) -> Option<&CancelReason> {
        self.reason.as_ref()
    }

    /// True if the scope is shielded from the cancellation of enclosing
    /// scopes.
    ///
    /// ```
    /// # use hatchery::{CancelScope, Report};
    /// # futures::executor::block_on(async {
    /// CancelScope::new()
    ///     .shield(true)
    ///     .run(async {
    ///         assert!(Report::capture().scopes()[0].is_shielded());
    ///         Ok(())
    ///     })
    ///     .await
    ///     .unwrap();
    /// # });
    /// ```
    pub fn is_shielded(&self) -> bool {
        self.shielded
    }

    /// The scope's own deadline, if it has one.
    ///
    /// ```
    /// # use hatchery::{move_on_after, Report};
    /// # use std::time::Duration;
    /// # futures::executor::block_on(async {
    /// move_on_after(Duration::from_secs(60), async {
    ///     assert!(Report::capture().scopes()[0].deadline().is_some());
    ///     Ok(())
    /// })
    /// .await
    /// .unwrap();
    /// # });
    /// ```
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The enclosing scopes and this one, outermost first, separated by ` > `.
    ///
    /// ```
    /// # use hatchery::{nursery, Cancelled, Nursery, Report};
    /// # futures::executor::block_on(async {
    /// # nursery(|_n| async move {
    /// assert!(Report::capture().scopes()[0].path().starts_with("nursery at "));
    /// # Ok(())
    /// # }).await.unwrap();
    /// # });
    /// ```
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl Report {
    /// Snapshots the whole tree the current task belongs to: from the
    /// outermost scope above the current one (the root of the `run`, or of
    /// the outermost nursery) downwards, plus every blocking closure still
    /// running. Outside any scope, only the blocking closures are listed.
    ///
    /// ```
    /// use hatchery::{run, Cancelled, Nursery, Report};
    ///
    /// run(|n| async move {
    ///     n.named("worker").spawn(async { hatchery::sleep_forever().await?; Ok(()) });
    ///     hatchery::checkpoint().await?; // the nursery admits (polls) its new child
    ///     // E.g. behind a debug endpoint:
    ///     let text = Report::capture().to_string();
    ///     assert!(text.contains("worker"));
    ///     n.cancel_scope().cancel();
    ///     Ok(())
    /// })
    /// .unwrap();
    /// ```
    pub fn capture() -> Report {
        let Some(mut node) = with_current(|current| current.cloned()) else {
            return Report::from_root(None);
        };
        while let Some(parent) = node.parent() {
            node = parent;
        }
        Report::from_root(Some(node))
    }

    /// Snapshots the subtree of one scope (a nursery's
    /// [`cancel_scope`](crate::Nursery::cancel_scope), or any
    /// [`CancelHandle`]), plus every blocking closure still running.
    ///
    /// ```
    /// use hatchery::{nursery, sleep_forever, Cancelled, Nursery, Report};
    ///
    /// # futures::executor::block_on(async {
    /// nursery(|n| async move {
    ///     n.named("idle").spawn(async { sleep_forever().await?; Ok(()) });
    ///     hatchery::checkpoint().await?;
    ///     let report = Report::of(&n.cancel_scope());
    ///     assert_eq!(report.tasks()[0].info().name(), Some("idle"));
    ///     n.cancel_scope().cancel();
    ///     Ok(())
    /// })
    /// .await
    /// .unwrap();
    /// # });
    /// ```
    pub fn of(scope: &CancelHandle) -> Report {
        Report::from_root(Some(Arc::clone(&scope.node)))
    }

    fn from_root(root: Option<Arc<Node>>) -> Report {
        let now = clock::now();
        let mut report = Report {
            items: Vec::new(),
            tasks: Vec::new(),
            scopes: Vec::new(),
            blocking: Vec::new(),
        };
        if let Some(root) = root {
            report.walk(root, now);
        }
        for (_, record) in lock(&BLOCKING).iter() {
            report.blocking.push(TaskState {
                info: record.info.clone(),
                age: now.saturating_duration_since(record.since),
                cleaning_up: false,
                note: Flags::default(),
                path: String::new(),
                abandoned: record.abandoned.load(Ordering::Relaxed),
            });
        }
        report
    }

    /// Snapshots `root` and its subtree, in preorder, iteratively.
    fn walk(&mut self, root: Arc<Node>, now: Instant) {
        let mut pending = vec![Pending {
            node: root,
            depth: 0,
            last: true,
        }];
        // The labels of the current node and its ancestors, outermost first.
        let mut labels: Vec<String> = Vec::new();
        while let Some(Pending { node, depth, last }) = pending.pop() {
            let snapshot = node.snapshot();
            let label = match &snapshot.kind {
                Kind::Nursery(table) => format!("nursery at {}", table.location),
                Kind::Scope(location) => format!("cancel scope at {location}"),
                Kind::Starting => "starting task".to_owned(),
            };
            labels.truncate(depth);
            labels.push(label.clone());
            let path = path_of(&labels);
            let cancelled = snapshot.effectively_cancelled;
            self.scopes.push(ScopeState {
                label,
                nursery: matches!(snapshot.kind, Kind::Nursery(_)),
                location: match &snapshot.kind {
                    Kind::Nursery(table) => Some(table.location),
                    Kind::Scope(location) => Some(location),
                    Kind::Starting => None,
                },
                cancelled,
                reason: snapshot.reason,
                shielded: snapshot.shield,
                deadline: snapshot.deadline,
                handled_failures: match &snapshot.kind {
                    Kind::Nursery(table) => table.handled.load(Ordering::Relaxed),
                    _ => 0,
                },
                path: path.clone(),
            });
            let mut item = Item {
                scope: self.scopes.len() - 1,
                depth,
                last,
                has_children: !snapshot.children.is_empty(),
                tasks: Vec::new(),
            };
            if let Kind::Nursery(table) = &snapshot.kind {
                table.for_each(|info, since, note| {
                    item.tasks.push(self.tasks.len());
                    self.tasks.push(TaskState {
                        info,
                        age: now.saturating_duration_since(since),
                        cleaning_up: cancelled,
                        note,
                        path: path.clone(),
                        abandoned: false,
                    });
                });
            }
            self.items.push(item);
            // Pushed in reverse, so that they are visited in entry order.
            let count = snapshot.children.len();
            for (index, child) in snapshot.children.into_iter().enumerate().rev() {
                pending.push(Pending {
                    node: child,
                    depth: depth + 1,
                    last: index + 1 == count,
                });
            }
        }
    }

    /// The tasks still alive, in tree order (blocking closures excepted; see
    /// [`blocking`](Self::blocking)). A child appears once its nursery has
    /// admitted it, on the nursery's first poll after the spawn.
    ///
    /// ```
    /// use hatchery::Report;
    /// assert!(Report::capture().tasks().is_empty()); // outside any nursery
    /// ```
    pub fn tasks(&self) -> &[TaskState] {
        &self.tasks
    }

    /// The scopes and nurseries of the tree, outermost first.
    ///
    /// ```
    /// use hatchery::Report;
    /// assert!(Report::capture().scopes().is_empty()); // outside any scope
    /// ```
    pub fn scopes(&self) -> &[ScopeState] {
        &self.scopes
    }

    /// Blocking closures (see [`Nursery::spawn_blocking`](crate::Nursery::spawn_blocking))
    /// still running on a thread, anywhere in the process. After a hard
    /// cancel these are abandoned ([`TaskState::is_abandoned`]): nobody
    /// joins their threads, and they do not hold the program open.
    ///
    /// ```
    /// use hatchery::Report;
    /// let abandoned = Report::capture().blocking().iter().filter(|t| t.is_abandoned()).count();
    /// assert_eq!(abandoned, 0);
    /// ```
    pub fn blocking(&self) -> &[TaskState] {
        &self.blocking
    }

    fn fmt_tree(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `guides[d]` continues the line of the ancestor at depth `d + 1`.
        let mut guides: Vec<&str> = Vec::new();
        for item in &self.items {
            guides.truncate(item.depth.saturating_sub(1));
            if item.depth > 0 {
                let indent = guides.concat();
                write!(f, "{indent}{}", if item.last { "└─ " } else { "├─ " })?;
                guides.push(if item.last { "   " } else { "│  " });
            }
            let inner = guides.concat();
            let scope = &self.scopes[item.scope];
            write!(f, "{}", scope.label)?;
            if let Some(reason) = &scope.reason {
                write!(f, " [cancelled: {reason}]")?;
            } else if scope.cancelled {
                write!(f, " [cancelled from outside]")?;
            }
            if scope.shielded {
                write!(f, " [shield held]")?;
            }
            if scope.handled_failures > 0 {
                write!(f, " [{} failures handled]", scope.handled_failures)?;
            }
            if let Some(deadline) = scope.deadline {
                match deadline.checked_duration_since(clock::now()) {
                    Some(left) => write!(f, " [deadline in {}]", Age(left))?,
                    None => write!(f, " [deadline passed]")?,
                }
            }
            writeln!(f)?;
            for (index, &task) in item.tasks.iter().enumerate() {
                let last = index + 1 == item.tasks.len() && !item.has_children;
                let task = &self.tasks[task];
                let note = task.note;
                let status = match (task.cleaning_up, note.told(), note.shielded()) {
                    (false, _, _) => "running",
                    (true, true, true) => "told to cancel, cleaning up behind a shield",
                    (true, true, false) => "told to cancel, cleaning up",
                    (true, false, true) => "behind a shield: the cancellation does not reach it",
                    (true, false, false) if note.remote() => {
                        "runs on another thread, where it is told"
                    }
                    (true, false, false) => {
                        "not told yet: not polled since the cancel (does it block its thread?)"
                    }
                };
                writeln!(
                    f,
                    "{inner}{}{}, age {}, {status}",
                    if last { "└─ " } else { "├─ " },
                    task.info,
                    Age(task.age),
                )?;
            }
        }
        Ok(())
    }
}

/// Joins labels into a path, eliding the middle of very deep ones.
fn path_of(labels: &[String]) -> String {
    if labels.len() <= PATH_MAX {
        return labels.join(" > ");
    }
    let head = &labels[..2];
    let tail = &labels[labels.len() - (PATH_MAX - 3)..];
    let skipped = labels.len() - head.len() - tail.len();
    format!(
        "{} > ({skipped} more) > {}",
        head.join(" > "),
        tail.join(" > ")
    )
}

/// Formats a duration for people: `850ms`, `3.2s`, `2m05s`.
struct Age(Duration);

impl fmt::Display for Age {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        if millis < 1000 {
            write!(f, "{millis}ms")
        } else if millis < 60_000 {
            write!(f, "{:.1}s", self.0.as_secs_f64())
        } else {
            let secs = self.0.as_secs();
            write!(f, "{}m{:02}s", secs / 60, secs % 60)
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let running = self.tasks.len();
        writeln!(
            f,
            "{running} task{} still running:",
            if running == 1 { "" } else { "s" }
        )?;
        self.fmt_tree(f)?;
        if !self.blocking.is_empty() {
            let abandoned = self.blocking.iter().filter(|t| t.abandoned).count();
            writeln!(
                f,
                "blocking closures still on a thread: {} ({abandoned} abandoned)",
                self.blocking.len()
            )?;
            for task in &self.blocking {
                writeln!(
                    f,
                    "   {}, running for {}{}",
                    task.info,
                    Age(task.age),
                    if task.abandoned { ", abandoned" } else { "" }
                )?;
            }
        }
        Ok(())
    }
}

/// What the report copies out of one node, under its lock.
pub(crate) struct NodeSnapshot {
    pub(crate) kind: Kind,
    pub(crate) effectively_cancelled: bool,
    pub(crate) reason: Option<CancelReason>,
    pub(crate) shield: bool,
    pub(crate) deadline: Option<Instant>,
    pub(crate) children: Vec<Arc<Node>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn here() -> &'static Location<'static> {
        Location::caller()
    }

    /// Each listed child's spawn site (compared by file, line and column)
    /// and name.
    fn listed(table: &TaskTable) -> Vec<(&'static Location<'static>, Option<String>)> {
        let mut out = Vec::new();
        table.for_each(|info, _, _| out.push((info.location(), info.name().map(String::from))));
        out
    }

    fn sites(table: &TaskTable) -> Vec<&'static Location<'static>> {
        listed(table).into_iter().map(|(site, _)| site).collect()
    }

    #[test]
    fn children_from_interleaved_sites_keep_their_own_site_and_name() {
        let (a, b) = (here(), here());
        assert_ne!(a, b);
        let table = TaskTable::new(here());
        let mut admit = table.admit();
        for key in 0..40 {
            let site = if key % 2 == 0 { a } else { b };
            let name = (key == 7).then_some(Cow::Borrowed("seven"));
            admit.insert(key, TaskInfo::from_parts(name, site));
        }
        drop(admit);
        let cohorts = lock(&table.tasks).cohorts.len();
        assert_eq!(cohorts, 2, "one cohort per site in a batch");

        let seven = table.remove(7).expect("key 7 was admitted");
        assert_eq!((seven.location(), seven.name()), (b, Some("seven")));
        table.remove_all(
            &(0..40)
                .filter(|k| k % 4 != 0 && *k != 7)
                .collect::<Vec<_>>(),
        );
        let left = listed(&table);
        assert_eq!(left.len(), 10);
        assert!(left.iter().all(|(site, name)| *site == a && name.is_none()));
    }

    #[test]
    fn a_cohort_is_reused_only_once_no_key_refers_to_it() {
        let (a, b, c) = (here(), here(), here());
        let table = TaskTable::new(here());
        let mut admit = table.admit();
        admit.insert(0, TaskInfo::from_parts(None, a));
        admit.insert(1, TaskInfo::from_parts(None, a));
        drop(admit);
        let mut admit = table.admit();
        admit.insert(2, TaskInfo::from_parts(None, b));
        drop(admit);
        // Cohort of `a` loses one member: it is not free yet.
        table.remove_all(&[0]);
        let mut admit = table.admit();
        admit.insert(0, TaskInfo::from_parts(None, c));
        drop(admit);
        assert_eq!(lock(&table.tasks).cohorts.len(), 3);
        assert_eq!(sites(&table), [c, a, b]);
        // Now `a`'s cohort empties and the next new cohort takes its place.
        table.remove_all(&[1]);
        let mut admit = table.admit();
        admit.insert(1, TaskInfo::from_parts(None, b));
        drop(admit);
        assert_eq!(lock(&table.tasks).cohorts.len(), 3);
        assert_eq!(sites(&table), [c, b, b]);
        table.clear();
        assert!(listed(&table).is_empty());
    }

    #[test]
    fn a_batch_with_more_sites_than_it_remembers_still_lists_each_child_right() {
        // Eleven distinct call sites: more than a batch remembers.
        let many = [
            here(),
            here(),
            here(),
            here(),
            here(),
            here(),
            here(),
            here(),
            here(),
            here(),
            here(),
        ];
        assert!(many.len() > RECENT);
        assert!((1..many.len()).all(|i| !many[..i].contains(&many[i])));
        let table = TaskTable::new(here());
        let mut admit = table.admit();
        for key in 0..many.len() * 3 {
            admit.insert(key, TaskInfo::from_parts(None, many[key % many.len()]));
        }
        drop(admit);
        let expected: Vec<_> = (0..many.len() * 3).map(|k| many[k % many.len()]).collect();
        assert_eq!(sites(&table), expected);
    }
}
