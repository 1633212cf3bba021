//! Soak test: spawn/cancel/join cycles by the million across nested
//! nurseries, after which nothing may be left alive and memory may not have
//! grown.
//!
//! `soak_reduced` runs with the suite (100,000 cycles, or `HATCHERY_SOAK_CYCLES`);
//! so do `soak_parallel_children_on_four_workers` (20,000 parallel children
//! live at once on an async-executor run by four threads, or
//! `HATCHERY_SOAK_PARALLEL`) and `soak_parallel_children_under_run` (a
//! quarter of that under `run`, in real time, beside a CPU-bound child);
//! after each, every live counter is back where it started. The full million
//! and 100,000 live parallel children are ignored by default:
//!
//! ```sh
//! cargo test --release --features test-util --test soak -- --ignored --nocapture
//! ```
//!
//! The soak runs batch after batch under one virtual clock. A batch is a root
//! nursery holding a tree of children two or three nurseries deep, drawn from
//! a seeded generator (the same trees every run). A *cycle* is one leaf child:
//! spawned (or `start()`ed), cancelled (or finished, or failed), and joined.
//! The root of a batch is cancelled at 10 ms of virtual time, by one of:
//! its body calling `cancel()`, a `move_on_at` deadline, or a child failing
//! with an error that cancels its siblings. Inside the tree, subtrees end
//! earlier: under a `move_on_after` deadline (5 ms), by their own body
//! cancelling them (8 ms), and `start()`s that never call `started` are cut
//! short by a deadline (4 ms). Leaves sleep forever or tick until
//! cancelled, some finish early, some clean up in a shielded scope that
//! sleeps, some fail in their cleanup.
//!
//! Every leaf checks that it was cancelled at exactly the virtual instant its
//! plan says, and that cancellation is level-triggered. After each batch the
//! counters (spawned, joined, cancelled, cleaned up, finished, failed,
//! shielded, errors raised and returned) must match the plan, every error
//! raised must be in what the root returned, and `testing::live()` must be
//! back where it started. During each batch the live counts are sampled and
//! must stay under a bound that does not depend on the number of cycles.

#![cfg(feature = "test-util")]

use std::future::Future;
use std::ops::Sub;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use hatchery::testing::{self, Live};
use hatchery::{
    CancelError, CancelScope, Cancelled, Nursery, NurseryError, Started, checkpoint, now, sleep,
    sleep_forever, sleep_until, typed::move_on_after, typed::move_on_at, typed::nursery,
};

/// The live counters are process-wide: the soaks run one at a time.
static COUNTING: Mutex<()> = Mutex::new(());

const MS: Duration = Duration::from_millis(1);
/// When the root of a batch is cancelled (virtual time since its start).
const ROOT_AT: Duration = Duration::from_millis(10);
/// When a subtree under a `move_on_after` deadline is cancelled.
const INNER_DEADLINE_AT: Duration = Duration::from_millis(5);
/// When a nested nursery's body cancels its own scope.
const INNER_CANCEL_AT: Duration = Duration::from_millis(8);
/// When a `start()` that never calls `started` is cut short.
const START_DEADLINE_AT: Duration = Duration::from_millis(4);
/// When the root body samples the live counters (every child is up by then).
const SAMPLE_AT: Duration = Duration::from_millis(3);
/// How long a shielded cleanup sleeps after its task was cancelled.
const SHIELDED_CLEANUP: Duration = MS;
/// The most tasks, scopes or listeners a batch may have alive at once (a
/// batch holds a few dozen; a leak would pass this within a few batches).
const LIVE_BOUND: usize = 128;
/// How much the resident set may grow between the end of the warm-up (the
/// first tenth of the cycles) and the end of the soak.
const RSS_SLACK_KIB: u64 = 64 * 1024;
const SEED: u64 = 0x5eed_50a4_c0ff_ee01;

/// The error every task of the soak returns.
#[derive(Debug)]
enum SoakError {
    Cancelled,
    /// Raised by one task; the id is unique over the whole soak.
    Boom(u64),
    /// The failures of a nested nursery, passed up by the task that opened it.
    Nested(Vec<SoakError>),
}

impl From<Cancelled> for SoakError {
    fn from(_: Cancelled) -> Self {
        SoakError::Cancelled
    }
}

impl CancelError for SoakError {
    fn is_cancelled(&self) -> bool {
        matches!(self, SoakError::Cancelled)
    }
}

impl From<NurseryError<SoakError>> for SoakError {
    fn from(error: NurseryError<SoakError>) -> Self {
        if error.is_cancelled() {
            return SoakError::Cancelled;
        }
        SoakError::Nested(error.into_failures().into_iter().map(|f| f.error).collect())
    }
}

impl SoakError {
    /// The ids of every `Boom` in this error.
    fn collect_ids(self, ids: &mut Vec<u64>) {
        match self {
            SoakError::Boom(id) => ids.push(id),
            SoakError::Nested(errors) => errors.into_iter().for_each(|e| e.collect_ids(ids)),
            SoakError::Cancelled => panic!("a cancellation was reported as a failure"),
        }
    }
}

/// The ids of every error a nursery returned.
fn failure_ids(error: NurseryError<SoakError>) -> Vec<u64> {
    assert!(
        !error.is_cancelled(),
        "the root nursery was unwound by a cancellation from outside: there is none"
    );
    let mut ids = Vec::new();
    SoakError::Nested(error.into_failures().into_iter().map(|f| f.error).collect())
        .collect_ids(&mut ids);
    ids
}

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $field:ident,)*) => {
        /// What the tasks of the soak did, counted as they do it.
        struct Stats {
            $($(#[doc = $doc])* $field: AtomicU64,)*
            /// The ids of the errors raised in the running batch.
            raised_ids: Mutex<Vec<u64>>,
            /// `testing::live()` before the soak.
            baseline: Live,
            /// The most tasks, scopes and listeners (beyond the baseline)
            /// seen alive during a batch.
            peak: [AtomicUsize; 3],
        }

        /// A snapshot of the counters of [`Stats`], or what a batch's plan
        /// expects of them.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        struct Counts {
            $($field: u64,)*
        }

        impl Stats {
            fn new(baseline: Live) -> Self {
                Stats {
                    $($field: AtomicU64::new(0),)*
                    raised_ids: Mutex::new(Vec::new()),
                    baseline,
                    peak: Default::default(),
                }
            }

            fn snapshot(&self) -> Counts {
                Counts { $($field: self.$field.load(Relaxed),)* }
            }
        }

        impl Sub for Counts {
            type Output = Counts;

            fn sub(self, earlier: Counts) -> Counts {
                Counts { $($field: self.$field - earlier.$field,)* }
            }
        }
    };
}

counters! {
    /// Leaf children made (each a cycle).
    spawned,
    /// Leaf children whose future was dropped by whoever polled it.
    joined,
    /// Leaf children that saw `Cancelled`.
    cancelled,
    /// Leaf children that ran their cleanup to its end after seeing `Cancelled`.
    cleaned,
    /// Leaf children that returned `Ok` before any cancellation.
    finished,
    /// Leaf children that failed (not in their cleanup).
    failed,
    /// Shielded cleanups that completed.
    shielded,
    /// Errors raised, by failing leaves and by failing cleanups.
    raised,
    /// Errors that came back out of a batch.
    returned,
    /// Leaf children dropped before they returned: hard-cancelled.
    dropped_unfinished,
    /// Nurseries opened.
    nurseries,
    /// `start()` calls.
    starts,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

impl Stats {
    fn raise(&self, id: u64) -> SoakError {
        bump(&self.raised);
        self.raised_ids.lock().unwrap().push(id);
        SoakError::Boom(id)
    }

    /// Samples the live counters in the middle of a batch.
    fn sample(&self) {
        let live = testing::live();
        let base = self.baseline;
        let over = [
            ("tasks", live.tasks.checked_sub(base.tasks)),
            ("scopes", live.scopes.checked_sub(base.scopes)),
            ("listeners", live.listeners.checked_sub(base.listeners)),
        ];
        for ((what, over), peak) in over.into_iter().zip(&self.peak) {
            let over = over.unwrap_or_else(|| panic!("fewer live {what} than before the soak"));
            assert!(
                over <= LIVE_BOUND,
                "{over} {what} alive during one batch (bound {LIVE_BOUND}): a leak"
            );
            peak.fetch_max(over, Relaxed);
        }
    }
}

/// What a leaf child does.
#[derive(Debug, Clone, Copy)]
enum Role {
    /// Sleeps forever: cancelled.
    Forever,
    /// A checkpoint and a sleep of the period, in a loop: cancelled.
    Ticker(Duration),
    /// Cancelled; cleans up in a shielded scope that sleeps.
    ShieldedCleanup,
    /// Cancelled; its cleanup fails with this error id.
    FailInCleanup(u64),
    /// Sleeps this long, then returns `Ok` before any cancellation.
    Finish(Duration),
    /// Fails with this error id when the root's time comes: that failure
    /// cancels the batch.
    Fail(u64),
}

/// A child of a nursery in a batch's plan.
#[derive(Debug)]
enum Item {
    Leaf(Role),
    /// A leaf run with `start()`, awaited by the nursery's body; it calls
    /// `started(id)` after a checkpoint.
    Started(Role, u64),
    /// A spawned task calling `start()` under a deadline; the child never
    /// calls `started` and is cancelled while starting.
    StartCancelled,
    /// A task opening a nursery. On the path from the root to a failing
    /// leaf, when the failure reaches this nursery (see `place_failure`).
    Nested(Vec<Item>, Option<Duration>),
    /// A task opening a nursery under `move_on_after`; its body waits for
    /// the deadline.
    Deadline(Vec<Item>),
    /// A task opening a nursery whose body cancels it.
    SelfCancel(Vec<Item>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// The root body calls `cancel()` on the root nursery's scope.
    Cancel,
    /// The root nursery runs under `move_on_at`.
    Deadline,
    /// A `Role::Fail` leaf somewhere in the tree fails.
    Fail,
}

/// One root nursery and what happens in it.
#[derive(Debug)]
struct Batch {
    trigger: Trigger,
    items: Vec<Item>,
    /// When the root's children are cancelled.
    cancel_at: Duration,
}

impl Batch {
    /// What the counters must show once the batch has run.
    fn expected(&self) -> Counts {
        fn leaf(counts: &mut Counts, role: Role) {
            counts.spawned += 1;
            counts.joined += 1;
            match role {
                Role::Finish(_) => counts.finished += 1,
                Role::Fail(_) => {
                    counts.failed += 1;
                    counts.raised += 1;
                    counts.returned += 1;
                }
                Role::Forever
                | Role::Ticker(_)
                | Role::ShieldedCleanup
                | Role::FailInCleanup(_) => {
                    counts.cancelled += 1;
                    counts.cleaned += 1;
                    if let Role::ShieldedCleanup = role {
                        counts.shielded += 1;
                    }
                    if let Role::FailInCleanup(_) = role {
                        counts.raised += 1;
                        counts.returned += 1;
                    }
                }
            }
        }
        fn walk(counts: &mut Counts, items: &[Item]) {
            for item in items {
                match item {
                    Item::Leaf(role) => leaf(counts, *role),
                    Item::Started(role, _) => {
                        counts.starts += 1;
                        leaf(counts, *role);
                    }
                    Item::StartCancelled => {
                        counts.starts += 1;
                        leaf(counts, Role::Forever);
                    }
                    Item::Nested(items, _) | Item::Deadline(items) | Item::SelfCancel(items) => {
                        counts.nurseries += 1;
                        walk(counts, items);
                    }
                }
            }
        }
        let mut counts = Counts {
            nurseries: 1,
            ..Counts::default()
        };
        walk(&mut counts, &self.items);
        counts
    }
}

/// xorshift64*: plans are reproducible without a dependency.
struct Planner {
    state: u64,
    next_id: u64,
}

impl Planner {
    fn new(seed: u64) -> Self {
        Planner {
            state: seed,
            next_id: 0,
        }
    }

    fn below(&mut self, n: u64) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// A leaf's role. `may_fail`: whether an error in its cleanup is allowed
    /// here (not in subtrees that end before the root: their failure would
    /// cancel the batch early and shift every other leaf's timing).
    fn role(&mut self, may_fail: bool) -> Role {
        match self.below(64) {
            0..=23 => Role::Forever,
            // Periods that miss the 4, 5, 8 and 10 ms cancellations (a tick
            // at the same instant as a later one is harmless).
            24..=41 => Role::Ticker(if self.one_in(2) { 3 * MS } else { 7 * MS }),
            42..=49 => Role::Finish(if self.one_in(2) { MS } else { 2 * MS }),
            50..=56 => Role::ShieldedCleanup,
            57 if may_fail => Role::FailInCleanup(self.id()),
            _ => Role::Forever,
        }
    }

    /// The children of a nursery with `depth` more levels of nurseries below.
    fn items(&mut self, depth: u32, may_fail: bool) -> Vec<Item> {
        let mut items: Vec<Item> = (0..=self.below(3))
            .map(|_| Item::Leaf(self.role(may_fail)))
            .collect();
        if self.one_in(4) {
            let role = self.role(may_fail);
            let id = self.id();
            items.insert(0, Item::Started(role, id));
        }
        if self.one_in(6) {
            items.push(Item::StartCancelled);
        }
        if depth > 0 {
            for _ in 0..1 + u64::from(self.one_in(3)) {
                items.push(match self.below(4) {
                    0 => Item::Deadline(self.items(depth - 1, false)),
                    1 => Item::SelfCancel(self.items(depth - 1, false)),
                    _ => Item::Nested(self.items(depth - 1, may_fail), None),
                });
            }
        }
        items
    }

    /// Puts a failing leaf into a nursery of the tree that only the root's
    /// cancellation ends (the root, or a `Nested` chain below it), and works
    /// out when each nursery on the way up is cancelled; returns the root's.
    ///
    /// The failure cancels the failing leaf's nursery at `ROOT_AT`. It
    /// reaches the parent nursery only when that nursery has exited: after
    /// its shielded cleanups, which take `SHIELDED_CLEANUP`. And so on up.
    fn place_failure(&mut self, items: &mut Vec<Item>) -> Duration {
        // Indices of the `Nested` items from the root down to the failure.
        let mut path = Vec::new();
        let mut here = &mut *items;
        while let Some(i) = here.iter().position(|i| matches!(i, Item::Nested(..))) {
            if self.one_in(3) {
                break;
            }
            path.push(i);
            here = nested_mut(&mut here[i]);
        }
        let at = self.below(here.len() as u64 + 1) as usize;
        here.insert(at, Item::Leaf(Role::Fail(self.id())));

        let mut cancel_at = ROOT_AT;
        let mut root_cancel_at = ROOT_AT;
        for level in (0..=path.len()).rev() {
            let nursery = path[..level]
                .iter()
                .fold(&items[..], |here, &i| nested(&here[i]));
            let on_path = path.get(level).copied();
            let shielded = nursery
                .iter()
                .enumerate()
                .any(|(i, item)| Some(i) != on_path && shields_at_root_cancel(item));
            if level == 0 {
                root_cancel_at = cancel_at;
            } else {
                let mut here = &mut *items;
                for &i in &path[..level - 1] {
                    here = nested_mut(&mut here[i]);
                }
                let Item::Nested(_, at) = &mut here[path[level - 1]] else {
                    unreachable!()
                };
                *at = Some(cancel_at);
            }
            if shielded {
                cancel_at += SHIELDED_CLEANUP;
            }
        }
        root_cancel_at
    }

    /// The next batch, with at most `budget` leaves.
    fn batch(&mut self, budget: usize) -> Batch {
        let trigger = match self.below(3) {
            0 => Trigger::Cancel,
            1 => Trigger::Deadline,
            _ => Trigger::Fail,
        };
        let depth = 1 + self.below(2) as u32;
        let mut items = self.items(depth, true);
        let cancel_at = match trigger {
            Trigger::Fail => self.place_failure(&mut items),
            Trigger::Cancel | Trigger::Deadline => ROOT_AT,
        };
        let batch = Batch {
            trigger,
            items,
            cancel_at,
        };
        if batch.expected().spawned <= budget as u64 {
            return batch;
        }
        // The last few cycles: exactly `budget` leaves, two nurseries deep.
        Batch {
            trigger: Trigger::Cancel,
            items: vec![Item::Nested(
                (0..budget).map(|_| Item::Leaf(Role::Forever)).collect(),
                None,
            )],
            cancel_at: ROOT_AT,
        }
    }
}

/// The children of a `Nested` item.
fn nested_mut(item: &mut Item) -> &mut Vec<Item> {
    match item {
        Item::Nested(items, _) => items,
        _ => unreachable!("not a nested nursery"),
    }
}

/// The children of a `Nested` item, read-only.
fn nested(item: &Item) -> &[Item] {
    match item {
        Item::Nested(items, _) => items,
        _ => unreachable!("not a nested nursery"),
    }
}

/// Whether `item` holds a shielded cleanup that starts when the root's
/// cancellation reaches it (subtrees under their own deadline or cancel
/// are over by then).
fn shields_at_root_cancel(item: &Item) -> bool {
    match item {
        Item::Leaf(role) | Item::Started(role, _) => matches!(role, Role::ShieldedCleanup),
        Item::Nested(items, _) => items.iter().any(shields_at_root_cancel),
        Item::StartCancelled | Item::Deadline(_) | Item::SelfCancel(_) => false,
    }
}

/// What a task needs: the counters, the batch's start, and the instant
/// its leaves must be cancelled at.
#[derive(Clone, Copy)]
struct Cx<'s> {
    stats: &'s Stats,
    start: Instant,
    cancel_at: Instant,
}

impl Cx<'_> {
    /// The same, for a subtree that ends by `at` at the latest.
    fn within(self, at: Instant) -> Self {
        Cx {
            cancel_at: self.cancel_at.min(at),
            ..self
        }
    }
}

type Boxed<'s, T> = Pin<Box<dyn Future<Output = T> + Send + 's>>;

/// Counts a leaf as joined when its future is dropped, and as dropped
/// unfinished if that happens before it returned.
struct Joined<'s> {
    stats: &'s Stats,
    returned: bool,
}

impl Drop for Joined<'_> {
    fn drop(&mut self) {
        bump(&self.stats.joined);
        if !self.returned {
            bump(&self.stats.dropped_unfinished);
        }
    }
}

/// A leaf child, counted as spawned when it is made.
fn leaf<'s>(cx: Cx<'s>, role: Role) -> impl Future<Output = Result<(), SoakError>> + Send + 's {
    bump(&cx.stats.spawned);
    let joined = Joined {
        stats: cx.stats,
        returned: false,
    };
    async move {
        // The whole guard moves in (a closure would capture just the `bool`).
        let mut joined = joined;
        let out = behave(cx, role).await;
        joined.returned = true;
        out
    }
}

async fn behave(cx: Cx<'_>, role: Role) -> Result<(), SoakError> {
    let stats = cx.stats;
    let cancelled = match role {
        Role::Finish(after) => {
            sleep(after).await?;
            bump(&stats.finished);
            return Ok(());
        }
        Role::Fail(id) => {
            sleep_until(cx.start + ROOT_AT).await?;
            bump(&stats.failed);
            return Err(stats.raise(id));
        }
        Role::Ticker(period) => loop {
            if let Err(cancelled) = checkpoint().await {
                break cancelled;
            }
            if let Err(cancelled) = sleep(period).await {
                break cancelled;
            }
        },
        Role::Forever | Role::ShieldedCleanup | Role::FailInCleanup(_) => {
            let Err(cancelled) = sleep_forever().await;
            cancelled
        }
    };
    bump(&stats.cancelled);
    assert_eq!(
        now() - cx.start,
        cx.cancel_at - cx.start,
        "a {role:?} leaf was cancelled at the wrong virtual time"
    );
    // The cleanup. Cancellation is level-triggered: checkpoints keep failing.
    assert_eq!(
        checkpoint().await,
        Err(Cancelled),
        "{role:?}: cancellation wore off"
    );
    if let Role::ShieldedCleanup = role {
        let flushed = CancelScope::new()
            .shield(true)
            .run_typed(async {
                sleep(SHIELDED_CLEANUP).await?;
                Ok::<_, Cancelled>(())
            })
            .await;
        assert_eq!(flushed, Ok(Some(())), "a shielded cleanup was cut short");
        assert_eq!(now() - cx.cancel_at, SHIELDED_CLEANUP);
        assert_eq!(sleep(MS).await, Err(Cancelled), "cancellation wore off");
        bump(&stats.shielded);
    }
    bump(&stats.cleaned);
    if let Role::FailInCleanup(id) = role {
        return Err(stats.raise(id));
    }
    Err(cancelled.into())
}

/// Opens a nested nursery holding `items`. With `linger`, its body waits
/// to be cancelled once it has spawned them.
fn open<'s>(
    cx: Cx<'s>,
    items: &'s [Item],
    linger: bool,
) -> impl Future<Output = Result<Option<()>, NurseryError<SoakError>>> + Send + 's {
    bump(&cx.stats.nurseries);
    nursery(move |n: Nursery<'s, SoakError>| async move {
        populate(n, cx, items).await?;
        if linger {
            sleep_forever().await?;
        }
        Ok(())
    })
}

/// A nursery body's first part: spawns (or starts) every item into `n`.
fn populate<'s>(
    n: Nursery<'s, SoakError>,
    cx: Cx<'s>,
    items: &'s [Item],
) -> Boxed<'s, Result<(), SoakError>> {
    Box::pin(async move {
        for item in items {
            match item {
                Item::Leaf(role) => n.spawn(leaf(cx, *role)),
                &Item::Started(role, id) => {
                    bump(&cx.stats.starts);
                    let value = n
                        .start(move |status: Started<u64>| {
                            let work = leaf(cx, role);
                            async move {
                                checkpoint().await?;
                                status.started(id);
                                work.await
                            }
                        })
                        .await?;
                    assert_eq!(value, id, "start() handed back another value");
                }
                Item::StartCancelled => {
                    bump(&cx.stats.starts);
                    let at = cx.start + START_DEADLINE_AT;
                    let starting = cx.within(at);
                    let handle = n.clone();
                    n.spawn(async move {
                        let start = handle.start(move |status: Started<()>| {
                            let leaf = leaf(starting, Role::Forever);
                            async move {
                                let _never_called = status;
                                leaf.await
                            }
                        });
                        let out = move_on_at(at, start).await?;
                        assert_eq!(out, None, "a start() whose child never started returned");
                        Ok(())
                    });
                }
                Item::Nested(items, cancel_at) => n.spawn(async move {
                    let cx = match cancel_at {
                        Some(at) => Cx {
                            cancel_at: cx.start + *at,
                            ..cx
                        },
                        None => cx,
                    };
                    let out = open(cx, items, false).await?;
                    assert_eq!(out, Some(()), "a nested nursery caught a cancellation");
                    Ok(())
                }),
                Item::Deadline(items) => {
                    let inner = cx.within(cx.start + INNER_DEADLINE_AT);
                    n.spawn(async move {
                        let out = move_on_after(INNER_DEADLINE_AT, async move {
                            open(inner, items, true).await?;
                            Ok::<_, SoakError>(())
                        })
                        .await?;
                        assert_eq!(out, None, "move_on_after did not cut its nursery short");
                        Ok(())
                    });
                }
                Item::SelfCancel(items) => {
                    let at = cx.start + INNER_CANCEL_AT;
                    let inner = cx.within(at);
                    n.spawn(async move {
                        bump(&cx.stats.nurseries);
                        let out = nursery(move |m: Nursery<'s, SoakError>| async move {
                            populate(m.clone(), inner, items).await?;
                            sleep_until(at).await?;
                            m.cancel_scope().cancel();
                            Ok(())
                        })
                        .await?;
                        assert_eq!(out, Some(()), "a nursery that cancelled itself");
                        Ok(())
                    });
                }
            }
        }
        Ok(())
    })
}

/// A root nursery's body, for the deadline and failure triggers. With
/// `linger`, it waits to be cancelled once it has sampled.
async fn root_body<'s>(
    n: Nursery<'s, SoakError>,
    cx: Cx<'s>,
    items: &'s [Item],
    linger: bool,
) -> Result<(), SoakError> {
    populate(n, cx, items).await?;
    sleep_until(cx.start + SAMPLE_AT).await?;
    cx.stats.sample();
    if linger {
        sleep_forever().await?;
    }
    Ok(())
}

/// Runs one batch; checks that every error raised in it came back.
async fn run_batch(stats: &Stats, batch: &Batch) {
    let start = now();
    let cx = Cx {
        stats,
        start,
        cancel_at: start + batch.cancel_at,
    };
    let items = &batch.items[..];
    bump(&stats.nurseries);
    let mut returned = match batch.trigger {
        Trigger::Cancel => {
            let out = nursery(|n: Nursery<'_, SoakError>| async move {
                populate(n.clone(), cx, items).await?;
                sleep_until(start + SAMPLE_AT).await?;
                stats.sample();
                sleep_until(start + ROOT_AT).await?;
                n.cancel_scope().cancel();
                Ok(())
            })
            .await;
            match out {
                Ok(Some(())) => Vec::new(),
                Ok(None) => panic!("the root body returned, yet the root caught a cancellation"),
                Err(error) => failure_ids(error),
            }
        }
        Trigger::Deadline => {
            let out = move_on_at(start + ROOT_AT, async {
                nursery(|n: Nursery<'_, SoakError>| root_body(n, cx, items, true)).await?;
                Ok::<_, SoakError>(())
            })
            .await;
            match out {
                Ok(None) => Vec::new(),
                Ok(Some(())) => panic!("the root deadline passed and cancelled nothing"),
                Err(error) => {
                    let mut ids = Vec::new();
                    error.collect_ids(&mut ids);
                    ids
                }
            }
        }
        Trigger::Fail => {
            let out = nursery(|n: Nursery<'_, SoakError>| root_body(n, cx, items, false)).await;
            match out {
                Ok(_) => panic!("a child failed, and the root nursery returned Ok"),
                Err(error) => failure_ids(error),
            }
        }
    };
    let mut raised = std::mem::take(&mut *stats.raised_ids.lock().unwrap());
    raised.sort_unstable();
    returned.sort_unstable();
    assert_eq!(returned, raised, "errors raised in a batch went missing");
    stats.returned.fetch_add(returned.len() as u64, Relaxed);
}

/// Resident and peak resident set sizes of the process, in KiB (Linux).
#[derive(Debug, Clone, Copy)]
struct Memory {
    rss: u64,
    hwm: u64,
}

fn memory() -> Option<Memory> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        status.lines().find_map(|line| {
            line.strip_prefix(name)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
    };
    Some(Memory {
        rss: field("VmRSS:")?,
        hwm: field("VmHWM:")?,
    })
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(
        || "n/a".into(),
        |kib| format!("{:.1} MiB", kib as f64 / 1024.0),
    )
}

/// Runs `cycles` spawn/cancel/join cycles; panics on anything unexpected.
fn soak(cycles: usize) {
    // Resets VmHWM, so that the peak is this soak's (Linux; ignored elsewhere).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let baseline = testing::live();
    let stats = Stats::new(baseline);
    let mut planner = Planner::new(SEED);
    let mut warm_rss = None;
    let mut batches = 0u64;
    let began = Instant::now();
    let virtual_elapsed = testing::run(async {
        let virtual_start = now();
        let mut done = 0;
        while done < cycles {
            let batch = planner.batch(cycles - done);
            let expected = batch.expected();
            let before = stats.snapshot();
            run_batch(&stats, &batch).await;
            let did = stats.snapshot() - before;
            assert_eq!(
                did, expected,
                "batch {batches} did not go to plan: {batch:?}"
            );
            assert_eq!(
                testing::live(),
                baseline,
                "batch {batches} left objects alive: {batch:?}"
            );
            done += expected.spawned as usize;
            batches += 1;
            if warm_rss.is_none() && done >= cycles / 10 {
                warm_rss = memory().map(|m| m.rss);
            }
        }
        now() - virtual_start
    });
    let elapsed = began.elapsed();
    let live_after = testing::live();
    let end = memory();
    let t = stats.snapshot();
    let peak = stats.peak.each_ref().map(|p| p.load(Relaxed));
    eprintln!(
        "soak: {cycles} cycles in {:.2} s ({:.0} ns/cycle), peak RSS {} (VmHWM), RSS {} after \
         warm-up, {} at the end; {batches} batches, {} nurseries, {} start() calls, {:.0} s of \
         virtual time; leaves: {} cancelled ({} cleaned up, {} in a shield), {} finished, {} \
         failed; errors: {} raised, {} returned; peak live during a batch: {} tasks, {} scopes, \
         {} listeners; live after: {live_after:?} (before: {baseline:?})",
        elapsed.as_secs_f64(),
        elapsed.as_nanos() as f64 / cycles.max(1) as f64,
        mib(end.map(|m| m.hwm)),
        mib(warm_rss),
        mib(end.map(|m| m.rss)),
        t.nurseries,
        t.starts,
        virtual_elapsed.as_secs_f64(),
        t.cancelled,
        t.cleaned,
        t.shielded,
        t.finished,
        t.failed,
        t.raised,
        t.returned,
        peak[0],
        peak[1],
        peak[2],
    );
    assert_eq!(live_after, baseline, "tasks, scopes or listeners leaked");
    assert_eq!(t.spawned, cycles as u64, "cycles miscounted");
    assert_eq!(t.joined, t.spawned, "children never joined");
    assert_eq!(
        t.dropped_unfinished, 0,
        "children dropped before they returned"
    );
    assert_eq!(
        t.cleaned, t.cancelled,
        "cancelled children that never cleaned up"
    );
    assert_eq!(
        t.cancelled + t.finished + t.failed,
        t.spawned,
        "children that neither were cancelled, finished nor failed"
    );
    assert_eq!(t.returned, t.raised, "errors lost");
    if let (Some(warm), Some(end)) = (warm_rss, end) {
        assert!(
            end.rss < warm + RSS_SLACK_KIB,
            "the resident set grew from {} after warm-up to {} at the end",
            mib(Some(warm)),
            mib(Some(end.rss)),
        );
    }
}

#[test]
#[ignore = "a million cycles: run with --ignored, in release"]
fn soak_one_million_cycles() {
    let _one_at_a_time = COUNTING.lock().unwrap_or_else(|e| e.into_inner());
    soak(1_000_000);
}

#[test]
fn soak_reduced() {
    let _one_at_a_time = COUNTING.lock().unwrap_or_else(|e| e.into_inner());
    let cycles = std::env::var("HATCHERY_SOAK_CYCLES").map_or(100_000, |cycles| {
        cycles
            .trim()
            .parse()
            .expect("HATCHERY_SOAK_CYCLES must be a number of cycles")
    });
    soak(cycles);
}

// ------------------------------------------------------------ parallel soak

/// Counts the parallel soak's children while their futures exist.
static PARALLEL_LIVE: AtomicUsize = AtomicUsize::new(0);
static PARALLEL_STARTED: AtomicUsize = AtomicUsize::new(0);
static PARALLEL_CLEANED: AtomicUsize = AtomicUsize::new(0);
static PARALLEL_FAILED: AtomicUsize = AtomicUsize::new(0);

struct ParallelAlive;

impl ParallelAlive {
    fn new() -> Self {
        PARALLEL_LIVE.fetch_add(1, Relaxed);
        ParallelAlive
    }
}

impl Drop for ParallelAlive {
    fn drop(&mut self) {
        PARALLEL_LIVE.fetch_sub(1, Relaxed);
    }
}

/// A parallel child of the soak: up, then waits (real time) until its
/// nursery is cancelled; one in 7 cleans up behind a shield that sleeps, one
/// in 1,000 fails in its cleanup.
fn parallel_child(index: usize) -> impl Future<Output = Result<(), SoakError>> + Send + 'static {
    let alive = ParallelAlive::new();
    async move {
        let _alive = alive;
        PARALLEL_STARTED.fetch_add(1, Relaxed);
        let out = sleep_forever().await;
        assert!(out.is_err(), "sleep_forever ended without a cancel");
        // Level-triggered: every further checkpoint is cancelled too.
        assert_eq!(checkpoint().await, Err(Cancelled));
        if index.is_multiple_of(7) {
            CancelScope::new()
                .shield(true)
                .run_typed(sleep(MS))
                .await
                .expect("a shielded cleanup is not cancelled");
            PARALLEL_CLEANED.fetch_add(1, Relaxed);
        }
        if index % 1000 == 999 {
            PARALLEL_FAILED.fetch_add(1, Relaxed);
            return Err(SoakError::Boom(index as u64));
        }
        Err(SoakError::Cancelled)
    }
}

/// `count` children live at once across `workers` threads (spawned onto the
/// executor by `spawn`), then cancelled, cleaned up and joined; afterwards
/// every live counter is back where it started.
fn parallel_soak<S>(count: usize, spawn: S)
where
    S: Fn(&Nursery<'_, SoakError>, usize),
{
    let baseline = testing::live();
    PARALLEL_STARTED.store(0, Relaxed);
    PARALLEL_CLEANED.store(0, Relaxed);
    PARALLEL_FAILED.store(0, Relaxed);
    let spawn = &spawn;
    let out = futures::executor::block_on(nursery(|n: Nursery<'_, SoakError>| async move {
        for index in 0..count {
            spawn(&n, index);
            if index % 1024 == 1023 {
                checkpoint().await?;
            }
        }
        // Every child is up (they run on the workers meanwhile).
        while PARALLEL_STARTED.load(Relaxed) < count {
            sleep(MS).await?;
        }
        let live = testing::live();
        assert!(
            live.tasks >= baseline.tasks + count,
            "{count} children up, but only {} tasks counted",
            live.tasks - baseline.tasks
        );
        assert_eq!(PARALLEL_LIVE.load(Relaxed), count);
        n.cancel_scope().cancel();
        Ok(())
    }));
    let failed = PARALLEL_FAILED.load(Relaxed);
    match out {
        Ok(_) => assert_eq!(failed, 0),
        Err(error) => {
            let ids = failure_ids(error);
            assert_eq!(ids.len(), failed, "every failure came back once");
        }
    }
    assert_eq!(
        PARALLEL_LIVE.load(Relaxed),
        0,
        "a child outlived its nursery"
    );
    assert_eq!(PARALLEL_CLEANED.load(Relaxed), count.div_ceil(7));
    assert_eq!(
        testing::live(),
        baseline,
        "left alive after the parallel soak"
    );
}

fn parallel_count() -> usize {
    std::env::var("HATCHERY_SOAK_PARALLEL").map_or(20_000, |count| {
        count
            .trim()
            .parse()
            .expect("HATCHERY_SOAK_PARALLEL must be a number of children")
    })
}

/// Parallel children on an async-executor run by four worker threads.
fn soak_on_four_workers(count: usize) {
    let executor = std::sync::Arc::new(async_executor::Executor::new());
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    std::thread::scope(|scope| {
        let _stop = stop_tx;
        for _ in 0..4 {
            let (executor, stop_rx) = (std::sync::Arc::clone(&executor), stop_rx.clone());
            scope.spawn(move || futures_lite::future::block_on(executor.run(stop_rx.recv())));
        }
        parallel_soak(count, |n, index| {
            n.spawn_on(&*executor, parallel_child(index));
        });
    });
}

#[test]
fn soak_parallel_children_on_four_workers() {
    let _one_at_a_time = COUNTING.lock().unwrap_or_else(|e| e.into_inner());
    soak_on_four_workers(parallel_count());
}

#[test]
#[ignore = "100,000 live parallel children: run with --ignored, in release"]
fn soak_one_hundred_thousand_parallel_children() {
    let _one_at_a_time = COUNTING.lock().unwrap_or_else(|e| e.into_inner());
    soak_on_four_workers(100_000);
}

/// The real-time variant under `run`: its own executor (a worker per
/// core), `spawn_parallel`, and a CPU-bound child among the sleepers.
#[test]
fn soak_parallel_children_under_run() {
    let _one_at_a_time = COUNTING.lock().unwrap_or_else(|e| e.into_inner());
    let count = parallel_count() / 4;
    let baseline = testing::live();
    PARALLEL_STARTED.store(0, Relaxed);
    PARALLEL_CLEANED.store(0, Relaxed);
    let out = hatchery::typed::run(|n: Nursery<'static, SoakError>| async move {
        n.spawn_parallel(async {
            // CPU-bound: never awaits; the others still run and stop.
            let sum: u64 = (0..2_000_000u64).map(std::hint::black_box).sum();
            assert_eq!(sum, 1_999_999_000_000);
            Ok(())
        });
        for index in 0..count {
            n.spawn_parallel(parallel_child(index * 7000));
        }
        while PARALLEL_STARTED.load(Relaxed) < count {
            sleep(MS).await?;
        }
        assert_eq!(PARALLEL_LIVE.load(Relaxed), count);
        n.cancel_scope().cancel();
        Ok(())
    });
    assert!(out.is_ok(), "{out:?}");
    assert_eq!(PARALLEL_LIVE.load(Relaxed), 0, "a child outlived run");
    assert_eq!(
        PARALLEL_CLEANED.load(Relaxed),
        count,
        "every shielded cleanup ran"
    );
    assert_eq!(testing::live(), baseline, "left alive after run");
}
