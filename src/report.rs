//! The report of who is still running: a snapshot of the task tree.
//!
//! Every entered cancel scope is a node of the status tree (see
//! `cancel::tree`), and every nursery's node carries its child table
//! (`nursery::table`): the name, spawn location and admission time of each
//! child it still polls. A [`Report`] walks that tree from a scope
//! downwards, one lock at a time, and copies out what a person debugging a
//! stuck shutdown needs: the nursery path, each task's name, location, age
//! and whether it was told of the cancellation, which scopes are cancelled
//! and why, which shields hold, and which blocking closures are still
//! running on a thread of their own (`nursery::blocking`).
//!
//! # Invariants
//!
//! 1. A snapshot never holds two locks at once (the tree's invariant 3), and
//!    never calls user code while holding one: it can be taken from any
//!    thread, including while the program is shutting down.

use std::fmt;
use std::panic::Location;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::CancelHandle;
use crate::cancel::CancelReason;
use crate::cancel::tree::{Kind, Node};
use crate::clock;
use crate::context::with_current;
use crate::nursery::blocking;
use crate::task::{Flags, TaskInfo};

/// A snapshot of a task tree: who is still running, where they were spawned,
/// and what holds them. Printed by [`run`](crate::run) when a shutdown runs
/// out of grace; take one yourself with [`Report::capture`] (the whole tree
/// of the current task) or [`Report::of`] (one scope's subtree) and show it
/// anywhere — it implements `Display`. The text is bounded: at most a
/// thousand lines of the tree (then how many scopes and tasks were left
/// out), and scopes deeper than two dozen levels drawn with their depth
/// written out instead of more guides; [`tasks`](Report::tasks) and
/// [`scopes`](Report::scopes) hold everything.
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

/// Deeper scopes are drawn with this many levels of guides and their depth
/// written out, so that a line stays short however deep the tree is.
const INDENT_MAX: usize = 24;

/// `Display` lists at most this many lines of the tree, then says how many
/// scopes and tasks it left out ([`Report::tasks`] and [`Report::scopes`]
/// hold them all): a report printed to a terminal stays readable, and a
/// tree of a million tasks does not flood it.
const LINES_MAX: usize = 1000;

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

    /// For a blocking closure: true if its task was dropped (hard-cancelled),
    /// or its `run_blocking` future dropped, while the closure still ran, so
    /// that nobody waits for its thread.
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
        blocking::for_each(|info, since, abandoned| {
            report.blocking.push(TaskState {
                info: info.clone(),
                age: now.saturating_duration_since(since),
                cleaning_up: false,
                note: Flags::default(),
                path: String::new(),
                abandoned,
            });
        });
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
                Kind::Nursery(table) => format!("nursery at {}", table.location()),
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
                    Kind::Nursery(table) => Some(table.location()),
                    Kind::Scope(location) => Some(location),
                    Kind::Starting => None,
                },
                cancelled,
                // Its own deadline passed though nothing inside has looked
                // since (its tasks wait on something that is not a
                // hatchery await, or behind a scope cancelled already):
                // that deadline cancelled it, whatever else did from
                // outside (a shielded scope is cancelled by nothing else).
                reason: snapshot.reason.or_else(|| {
                    snapshot
                        .deadline
                        .filter(|&deadline| deadline <= now)
                        .map(|_| CancelReason::Deadline)
                }),
                shielded: snapshot.shield,
                deadline: snapshot.deadline,
                handled_failures: match &snapshot.kind {
                    Kind::Nursery(table) => table.handled_failures(),
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
                table.for_each(&mut |info, since, note| {
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

    /// Blocking closures (see [`Nursery::spawn_blocking`](crate::Nursery::spawn_blocking)
    /// and [`run_blocking`](crate::run_blocking)) still running on a
    /// thread, anywhere in the process. Once nobody waits for one (its task
    /// was dropped by a hard cancel, or a `run_blocking` future was dropped
    /// unfinished) it is abandoned ([`TaskState::is_abandoned`]): nobody
    /// joins its thread, and it does not hold the program open.
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
        let mut lines = 0;
        for (shown, item) in self.items.iter().enumerate() {
            if lines + 1 + item.tasks.len().min(1) > LINES_MAX {
                return self.fmt_left_out(f, shown);
            }
            guides.truncate(item.depth.saturating_sub(1));
            if item.depth > 0 {
                let indent = Guides(&guides, item.depth);
                write!(f, "{indent}{}", if item.last { "└─ " } else { "├─ " })?;
                guides.push(if item.last { "   " } else { "│  " });
            }
            let inner = Guides(&guides, item.depth + 1);
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
                let count = scope.handled_failures;
                write!(f, " [{count} failure{} handled]", plural(count))?;
            }
            if let Some(deadline) = scope.deadline {
                match deadline.checked_duration_since(clock::now()) {
                    Some(left) => write!(f, " [deadline in {}]", Age(left))?,
                    None => write!(f, " [deadline passed]")?,
                }
            }
            writeln!(f)?;
            lines += 1;
            for (index, &task) in item.tasks.iter().enumerate() {
                if lines + 1 == LINES_MAX && index + 1 < item.tasks.len() {
                    let left = item.tasks.len() - index;
                    writeln!(f, "{inner}└─ … and {left} more task{} here", plural(left))?;
                    return self.fmt_left_out(f, shown + 1);
                }
                let last = index + 1 == item.tasks.len() && !item.has_children;
                let task = &self.tasks[task];
                let note = task.note;
                let status = match (task.cleaning_up, note.told(), note.shielded()) {
                    (false, _, _) => "running",
                    (true, true, true) => "told to cancel, cleaning up behind a shield",
                    (true, true, false) => "told to cancel, cleaning up",
                    (true, false, true) => "behind a shield: the cancellation does not reach it",
                    (true, false, false) if note.remote() => {
                        "runs on another thread (or waits for a worker there), told there (at its next unshielded checkpoint, or by its cancel handle)"
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
                lines += 1;
            }
        }
        Ok(())
    }

    /// The last line of a tree cut at `LINES_MAX`: what was left out from
    /// item `shown` on (the tasks of that item and after).
    fn fmt_left_out(&self, f: &mut fmt::Formatter<'_>, shown: usize) -> fmt::Result {
        let scopes = self.items.len() - shown;
        let tasks: usize = self.items[shown..]
            .iter()
            .map(|item| item.tasks.len())
            .sum();
        let (scopes_s, tasks_s) = (plural(scopes), plural(tasks));
        match (scopes, tasks) {
            (0, 0) => Ok(()),
            (0, _) => writeln!(
                f,
                "… {tasks} more task{tasks_s} not shown (Report::tasks() holds them all)"
            ),
            _ => writeln!(
                f,
                "… {scopes} more scope{scopes_s} and {tasks} more task{tasks_s} not shown \
                 (Report::scopes() and Report::tasks() hold them all)"
            ),
        }
    }
}

/// The plural ending of a count.
fn plural(count: usize) -> &'static str {
    if count == 1 { "" } else { "s" }
}

/// The guides in front of a line at `depth`: at most `INDENT_MAX` levels
/// drawn, then the depth written out.
struct Guides<'a>(&'a [&'a str], usize);

impl fmt::Display for Guides<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Guides(guides, depth) = *self;
        for guide in guides.iter().take(INDENT_MAX) {
            f.write_str(guide)?;
        }
        if guides.len() > INDENT_MAX {
            write!(f, "┆ (depth {depth}) ")?;
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
            write!(
                f,
                "blocking closures still on a thread: {}",
                self.blocking.len()
            )?;
            // Before a forced shutdown abandons them, none is: no "0
            // abandoned so far" just before they are.
            if abandoned > 0 {
                write!(f, " ({abandoned} abandoned so far)")?;
            }
            writeln!(f)?;
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
