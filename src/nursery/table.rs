//! The nursery's child table: the name, spawn location and admission time of
//! every child a nursery still polls, and of its parallel children on an
//! executor, readable from any thread (the report reads it through
//! the tree's `Kind::Nursery`).
//!
//! # Invariants
//!
//! 1. A nursery's table holds exactly the children of its slab (beside the
//!    parallel children of invariant 3): an entry is
//!    written when a child is admitted and removed when it finishes or is
//!    dropped (in both cases by the nursery future that owns the slab).
//! 2. A cohort's `count` is the number of keys that refer to it; a cohort
//!    with count 0 is on the free list (linked through `since`) and no key
//!    refers to it.
//! 3. Counted parallel children (on an async-executor or the tokio root)
//!    are not in the slab:
//!    the table keeps their task handles, from the start (under its
//!    `remote` lock, refused once the nursery closed) until the nursery
//!    closes or is dropped, and lists those not finished in the report.
//!    Finished ones are swept out as the list grows (amortized: twice the
//!    length left after the last sweep).

use std::borrow::Cow;
use std::collections::HashMap;
use std::panic::Location;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::cancel::tree::Tasks;
use crate::chunked::{ChunkVec, recast};
use crate::clock;
use crate::error::SpawnError;
use crate::spawn::RemoteHandle;
use crate::sync::Recover;
use crate::task::{Flags, TaskInfo};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().recover()
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
/// A cohort's `count` and the free list: invariant 2.
pub(crate) struct TaskTable {
    pub(crate) location: &'static Location<'static>,
    epoch: Instant,
    tasks: Mutex<Registry>,
    /// The counted parallel children (invariant 3).
    remote: Mutex<Remotes>,
    /// Failures of supervised children that their handler took.
    handled: AtomicUsize,
}

/// The counted parallel children of a nursery: their
/// task handles (dropped to cancel them: the hard cancel) and their
/// identities, for the report, until they finish (invariant 3).
#[derive(Default)]
struct Remotes {
    tasks: Vec<RemoteTask>,
    /// The entries from this index on have no admission time yet: the
    /// nursery gives them one in its next poll (`stamp_remote`), one clock
    /// read for all.
    stamped: usize,
    /// Finished tasks are swept out when `tasks` grows to this length.
    sweep_at: usize,
    /// The nursery has closed: nothing more starts.
    closed: bool,
    /// Where a sweep puts the handles it takes out, to be dropped outside
    /// the lock; kept for the next sweep (no allocation per sweep).
    swept: Vec<RemoteHandle>,
}

impl Remotes {
    /// Drops the handles of the finished tasks once the list has grown to
    /// twice what the last sweep kept (and at least `MIN_SWEEP`): one look
    /// per task started, amortized. A finished task's future is gone
    /// already: dropping its handle runs no code of the user's.
    ///
    /// Returns the handles taken out, for the caller to drop once it let go
    /// of the lock: the last handle of a task whose executor is gone drops
    /// what is left of that executor, other tasks (user code) among it.
    #[must_use = "the swept handles are to be dropped outside the lock"]
    fn sweep_if_grown(&mut self) -> Vec<RemoteHandle> {
        if self.tasks.len() < self.sweep_at.max(MIN_SWEEP) {
            return Vec::new();
        }
        // The stamped entries come first, and stay first.
        let mut swept = std::mem::take(&mut self.swept);
        let stamped = self.stamped;
        let (mut index, mut kept_stamped) = (0, 0);
        self.tasks.retain_mut(|task| {
            let finished = task.task.as_ref().is_none_or(RemoteHandle::is_finished);
            if finished {
                swept.extend(task.task.take());
            } else {
                kept_stamped += usize::from(index < stamped);
            }
            index += 1;
            !finished
        });
        self.stamped = kept_stamped;
        self.sweep_at = 2 * self.tasks.len();
        swept
    }
}

/// What a dropped nursery's table leaves for the thread's next one: entry
/// chunks, cohorts, the list of parallel children (all empty).
pub(crate) type TableBuffers = (Vec<Vec<u32>>, Vec<[u64; 2]>, Vec<RemoteTask>);

/// A parallel child in [`Remotes`].
pub(crate) struct RemoteTask {
    /// `None` once a sweep took it out (to drop it outside the lock).
    task: Option<RemoteHandle>,
    info: TaskInfo,
    /// When the nursery first saw it, in milliseconds after the epoch.
    since: u32,
}

/// Past this many entries, finished ones are swept out.
const MIN_SWEEP: usize = 64;

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

    /// `release` for each of `keys`, none of them named or noted: children
    /// that finish one after another most often belong to one cohort, whose
    /// count is updated once per run of them.
    fn release_unnoted(&mut self, keys: &[usize]) {
        let mut run: Option<(u32, u32)> = None;
        for &key in keys {
            let Some(cohort) = self
                .entries
                .get_mut(key)
                .map(std::mem::take)
                .and_then(|entry| entry.checked_sub(1))
            else {
                continue;
            };
            match &mut run {
                Some((current, count)) if *current == cohort => *count += 1,
                _ => {
                    if let Some((current, count)) = run.replace((cohort, 1)) {
                        self.leave(current, count);
                    }
                }
            }
        }
        if let Some((cohort, count)) = run {
            self.leave(cohort, count);
        }
    }

    /// `count` members leave `cohort`; freed when it has none left.
    fn leave(&mut self, cohort: u32, count: u32) {
        let entry = &mut self.cohorts[cohort as usize];
        entry.count -= count;
        if entry.count == 0 {
            entry.since = self.free.unwrap_or(NO_COHORT);
            self.free = Some(cohort);
        }
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
            remote: Mutex::new(Remotes::default()),
            handled: AtomicUsize::new(0),
        })
    }

    /// Starts a parallel child with `start` and keeps its task handle,
    /// unless the nursery has closed; both under the lock that closes it
    /// (`close_remote`), so that a child either starts before the close
    /// (and is waited for) or not at all. `Ok(true)`: the nursery must be
    /// polled to give it an admission time (the first such since its last
    /// poll). (A runtime already shut down drops the child inside `start`,
    /// so its `Drop` runs under the lock: it must not start a child of the
    /// same nursery.)
    pub(crate) fn start_remote(
        &self,
        info: TaskInfo,
        start: impl FnOnce(TaskInfo) -> RemoteHandle,
    ) -> Result<bool, SpawnError> {
        let mut remote = lock(&self.remote);
        if remote.closed {
            return Err(SpawnError::Closed);
        }
        let task = start(info.clone());
        let first_unstamped = remote.stamped == remote.tasks.len();
        remote.tasks.push(RemoteTask {
            task: Some(task),
            info,
            since: 0,
        });
        // Here too, not only in the nursery's poll: a burst of starts from
        // the body (one poll of the nursery) drops the handles of children
        // that finished meanwhile while the others still run.
        let swept = remote.sweep_if_grown();
        drop(remote);
        self.drop_swept(swept);
        Ok(first_unstamped)
    }

    /// Drops the handles a sweep took out, outside the lock, and keeps the
    /// list for the next sweep.
    #[inline]
    fn drop_swept(&self, swept: Vec<RemoteHandle>) {
        if swept.capacity() == 0 {
            // Nothing was swept (the common case): no call, no drop.
            std::mem::forget(swept);
            return;
        }
        self.keep_swept(swept);
    }

    fn keep_swept(&self, mut swept: Vec<RemoteHandle>) {
        swept.clear();
        let mut remote = lock(&self.remote);
        if remote.swept.capacity() < swept.capacity() {
            remote.swept = swept;
        }
    }

    /// Gives the parallel children started since the last call their
    /// admission time (now), and sweeps out the finished ones once there
    /// are many. Called by the nursery future in each poll.
    pub(crate) fn stamp_remote(&self) {
        let mut remote = lock(&self.remote);
        self.stamp(&mut remote);
        let swept = remote.sweep_if_grown();
        drop(remote);
        self.drop_swept(swept);
    }

    /// Gives the parallel children not stamped yet the time now (one clock
    /// read for all).
    fn stamp(&self, remote: &mut Remotes) {
        if remote.stamped < remote.tasks.len() {
            let ms = clock::now()
                .saturating_duration_since(self.epoch)
                .as_millis();
            let since = u32::try_from(ms).unwrap_or(u32::MAX);
            let stamped = remote.stamped;
            for task in &mut remote.tasks[stamped..] {
                task.since = since;
            }
            remote.stamped = remote.tasks.len();
        }
    }

    /// Closes the nursery to parallel children if `settled` (asked under
    /// the lock, which every start takes) says none runs and nothing they
    /// reported is left to record; returns whether it did, and the
    /// handles, to drop outside the lock (their tasks are done, or about to
    /// return from their last poll).
    pub(crate) fn close_remote(&self, settled: impl FnOnce() -> bool) -> (bool, Vec<RemoteTask>) {
        let mut remote = lock(&self.remote);
        if !settled() {
            return (false, Vec::new());
        }
        remote.closed = true;
        remote.stamped = 0;
        (true, std::mem::take(&mut remote.tasks))
    }

    /// Closes the nursery to parallel children for good and returns their
    /// handles (to drop outside the lock: that cancels the unfinished).
    pub(crate) fn abandon_remote(&self) -> Vec<RemoteTask> {
        let mut remote = lock(&self.remote);
        remote.closed = true;
        remote.stamped = 0;
        std::mem::take(&mut remote.tasks)
    }

    /// Counts a failure a supervised child's handler took.
    pub(crate) fn count_handled(&self) {
        self.handled.fetch_add(1, Ordering::Relaxed);
    }

    /// Starts admitting a batch of children (one lock for the batch).
    /// `last` is the site and cohort of the child admitted last in the same
    /// poll of the nursery (`Admit::last`), if any: its cohort is reused if
    /// it still has members (else it may be another site's by now).
    pub(crate) fn admit(&self, last: Option<Site>) -> Admit<'_> {
        let tasks = lock(&self.tasks);
        let last = last.filter(|&(site, cohort)| {
            tasks
                .cohorts
                .get(cohort as usize)
                .is_some_and(|c| c.count > 0 && std::ptr::eq(c.site, site))
        });
        Admit {
            tasks,
            epoch: self.epoch,
            since: None,
            recent: [None; RECENT],
            next: 0,
            last,
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
        if !tasks.names.is_empty() || tasks.notes.len() != 0 {
            for &key in keys {
                tasks.release(key);
                tasks.names.remove(&key);
            }
            return;
        }
        tasks.release_unnoted(keys);
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

    /// Gives the table the memory of a finished one's entries (see
    /// `take_chunks`), for it to fill before allocating.
    pub(crate) fn reuse(&self, (chunks, cohorts, remote): TableBuffers) {
        if !chunks.is_empty() || cohorts.capacity() > 0 {
            let mut tasks = lock(&self.tasks);
            tasks.entries.reuse(chunks);
            tasks.cohorts = recast(cohorts);
        }
        // Parallel children may have started already (the body closure runs
        // before the nursery future takes the buffers): their handles stay.
        let mut kept = lock(&self.remote);
        if kept.tasks.is_empty() && kept.tasks.capacity() < remote.capacity() {
            kept.tasks = remote;
        }
    }

    /// Forgets every child and returns the memory of their entries, for the
    /// thread's next nursery (the nursery is being dropped).
    #[cfg_attr(hatchery_loom, allow(dead_code))] // no per-thread pools there
    pub(crate) fn take_chunks(&self) -> TableBuffers {
        let mut tasks = lock(&self.tasks);
        let chunks = tasks.entries.take_chunks();
        let cohorts = recast(std::mem::take(&mut tasks.cohorts));
        tasks.notes.clear();
        tasks.free = None;
        tasks.names.clear();
        drop(tasks);
        // Closed or abandoned by now: the list is empty (its handles were
        // taken and dropped), only its memory is left.
        let remote = std::mem::take(&mut lock(&self.remote).tasks);
        debug_assert!(remote.is_empty(), "the nursery closed first");
        (chunks, cohorts, remote)
    }

    /// Takes back the list `close_remote` or `abandon_remote` returned, its
    /// handles dropped, for `take_chunks` to keep its memory.
    pub(crate) fn give_back_remote(&self, mut handles: Vec<RemoteTask>) {
        handles.clear();
        let mut remote = lock(&self.remote);
        if remote.tasks.is_empty() && remote.tasks.capacity() < handles.capacity() {
            remote.tasks = handles;
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
    /// child, in key order, then of every unfinished parallel child, under
    /// the table's two locks in turn (`each` must not call user code). A
    /// parallel child the nursery has not seen yet is stamped now: its age
    /// counts from the first report that lists it.
    pub(crate) fn for_each(&self, mut each: impl FnMut(TaskInfo, Instant, Flags)) {
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
        drop(tasks);
        let mut remote = lock(&self.remote);
        self.stamp(&mut remote);
        // (A `None` handle exists only inside a sweep.)
        let running = remote.tasks.iter().filter(|task| {
            task.task
                .as_ref()
                .is_some_and(|handle| !handle.is_finished())
        });
        for task in running {
            let since = self.epoch + Duration::from_millis(task.since.into());
            // Told where it runs, if its scope is cancelled.
            each(task.info.clone(), since, Flags::from_bits(Flags::REMOTE));
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
    /// The site and cohort of the child admitted last.
    last: Option<Site>,
}

/// A spawn site and the cohort its children of the current poll joined.
pub(crate) type Site = (&'static Location<'static>, u32);

/// How many cohorts a batch of admissions remembers.
const RECENT: usize = 8;

impl Admit<'_> {
    /// The site and cohort of the child admitted last, for the next batch
    /// of the same poll.
    pub(crate) fn last(&self) -> Option<Site> {
        self.last
    }

    #[inline]
    pub(crate) fn insert(&mut self, key: usize, info: TaskInfo) {
        let (name, site) = info.into_parts();
        // The common case: the same site as the child before.
        let cohort = match self.last {
            Some((at, cohort)) if std::ptr::eq(at, site) => {
                self.tasks.cohorts[cohort as usize].count += 1;
                cohort
            }
            _ => self.cohort_of(site),
        };
        let tasks = &mut *self.tasks;
        if key == tasks.entries.len() {
            tasks.entries.push(cohort + 1);
        } else {
            self.write_entry(key, cohort);
        }
        if let Some(name) = name {
            self.tasks.names.insert(key, name);
        }
    }

    /// The entry of a key that is not the next one (a reused key, or one
    /// past the end).
    #[cold]
    fn write_entry(&mut self, key: usize, cohort: u32) {
        let tasks = &mut *self.tasks;
        while tasks.entries.len() <= key {
            tasks.entries.push(0);
        }
        let entry = tasks.entries.get_mut(key).expect("grown above");
        debug_assert_eq!(*entry, 0, "a key is admitted only once it is free");
        *entry = cohort + 1;
    }

    /// The cohort of this batch for `site` (counting one more member),
    /// opened if the batch has none yet.
    fn cohort_of(&mut self, site: &'static Location<'static>) -> u32 {
        // One clock read per batch: a task's age counts from the poll that
        // admitted it, at most one poll after its spawn.
        let epoch = self.epoch;
        let since = *self.since.get_or_insert_with(|| {
            let ms = clock::now().saturating_duration_since(epoch).as_millis();
            u32::try_from(ms).unwrap_or(u32::MAX)
        });
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
        self.last = Some((site, cohort));
        cohort
    }
}

impl Tasks for TaskTable {
    fn location(&self) -> &'static Location<'static> {
        self.location
    }

    fn handled_failures(&self) -> usize {
        self.handled.load(Ordering::Relaxed)
    }

    fn for_each(&self, each: &mut dyn FnMut(TaskInfo, Instant, Flags)) {
        TaskTable::for_each(self, each);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn here() -> &'static Location<'static> {
        Location::caller()
    }

    #[test]
    fn invariant_3_finished_parallel_children_are_swept_out_and_never_listed() {
        let table = TaskTable::new(here());
        let executor = async_executor::Executor::new();
        let start = |name: &'static str, forever: bool| {
            let info = TaskInfo::new(Some(name.into()));
            table
                .start_remote(info, |_| {
                    RemoteHandle::Executor(executor.spawn(async move {
                        if forever {
                            std::future::pending::<()>().await;
                        }
                    }))
                })
                .unwrap()
        };
        // The first start since the nursery's last poll asks for a stamp.
        assert!(start("waits", true));
        assert!(!start("done", false));
        table.stamp_remote();
        for round in 0..1_000 {
            assert_eq!(start("done", false), round % 10 == 0);
            if round % 10 == 9 {
                while executor.try_tick() {}
                table.stamp_remote();
                let kept = lock(&table.remote).tasks.len();
                // Never more than twice what ran at the last sweep (one),
                // or the minimum, plus one round.
                assert!(
                    kept < MIN_SWEEP + 10,
                    "{kept} handles kept at round {round}"
                );
            }
        }
        let names: Vec<_> = listed(&table).into_iter().map(|(_, name)| name).collect();
        assert_eq!(
            names,
            [Some("waits".to_owned())],
            "only the unfinished is listed"
        );
        let (closed, handles) = table.close_remote(|| false);
        assert!(!closed && handles.is_empty(), "one still runs");
        let (closed, handles) = table.close_remote(|| true);
        assert!(closed && !handles.is_empty());
        drop(handles);
        let refused = table.start_remote(TaskInfo::new(None), |_| {
            RemoteHandle::Executor(executor.spawn(async {}))
        });
        assert_eq!(refused.unwrap_err(), SpawnError::Closed);
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
    fn a_later_batch_of_the_same_poll_joins_the_cohort_only_while_it_is_that_sites() {
        let (a, b) = (here(), here());
        let table = TaskTable::new(here());
        let mut admit = table.admit(None);
        admit.insert(0, TaskInfo::from_parts(None, a));
        let last = admit.last();
        drop(admit);
        // The next batch of the same poll joins A's cohort.
        let mut admit = table.admit(last);
        admit.insert(1, TaskInfo::from_parts(None, a));
        drop(admit);
        assert_eq!(lock(&table.tasks).cohorts.len(), 1);
        // A's children finish: its cohort is free, and B's takes its place.
        table.remove_all(&[0, 1]);
        let mut admit = table.admit(None);
        admit.insert(2, TaskInfo::from_parts(None, b));
        drop(admit);
        // A batch that remembers A's old cohort must not join B's.
        let mut admit = table.admit(last);
        admit.insert(3, TaskInfo::from_parts(None, a));
        drop(admit);
        assert_eq!(sites(&table), [b, a]);
        table.remove_all(&[2]);
        assert_eq!(sites(&table), [a], "B's cohort counted only B's child");
    }

    #[test]
    fn children_from_interleaved_sites_keep_their_own_site_and_name() {
        let (a, b) = (here(), here());
        assert_ne!(a, b);
        let table = TaskTable::new(here());
        let mut admit = table.admit(None);
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

    /// `remove_all` counts runs of one cohort at once: runs that alternate
    /// between cohorts, repeat a cohort later, or hold keys already gone
    /// leave each cohort's count right (freed exactly when its last member
    /// leaves).
    #[test]
    fn removing_runs_of_mixed_cohorts_frees_each_cohort_with_its_last_member() {
        let (a, b, c) = (here(), here(), here());
        let table = TaskTable::new(here());
        let mut admit = table.admit(None);
        for key in 0..6 {
            admit.insert(key, TaskInfo::from_parts(None, a));
        }
        drop(admit);
        let mut admit = table.admit(None);
        for key in 6..9 {
            admit.insert(key, TaskInfo::from_parts(None, b));
        }
        drop(admit);
        // a a b a b, then 7 again and 42: keys no longer (or never) there.
        table.remove_all(&[0, 1, 6, 2, 7, 7, 42]);
        assert_eq!(sites(&table), [a, a, a, b]);
        assert_eq!(lock(&table.tasks).free, None, "no cohort is empty yet");
        table.remove_all(&[8, 3]);
        assert_eq!(sites(&table), [a, a]);
        // `b`'s cohort is free now: the next new cohort takes its place.
        let mut admit = table.admit(None);
        admit.insert(6, TaskInfo::from_parts(None, c));
        drop(admit);
        assert_eq!(lock(&table.tasks).cohorts.len(), 2);
        assert_eq!(sites(&table), [a, a, c]);
        table.remove_all(&[4, 5, 6]);
        assert!(listed(&table).is_empty());
        // Both cohorts are free again: two new sites take them.
        let (d, e) = (here(), here());
        let mut admit = table.admit(None);
        admit.insert(0, TaskInfo::from_parts(None, d));
        admit.insert(1, TaskInfo::from_parts(None, e));
        drop(admit);
        assert_eq!(lock(&table.tasks).cohorts.len(), 2);
        assert_eq!(sites(&table), [d, e]);
    }

    #[test]
    fn a_cohort_is_reused_only_once_no_key_refers_to_it() {
        let (a, b, c) = (here(), here(), here());
        let table = TaskTable::new(here());
        let mut admit = table.admit(None);
        admit.insert(0, TaskInfo::from_parts(None, a));
        admit.insert(1, TaskInfo::from_parts(None, a));
        drop(admit);
        let mut admit = table.admit(None);
        admit.insert(2, TaskInfo::from_parts(None, b));
        drop(admit);
        // Cohort of `a` loses one member: it is not free yet.
        table.remove_all(&[0]);
        let mut admit = table.admit(None);
        admit.insert(0, TaskInfo::from_parts(None, c));
        drop(admit);
        assert_eq!(lock(&table.tasks).cohorts.len(), 3);
        assert_eq!(sites(&table), [c, a, b]);
        // Now `a`'s cohort empties and the next new cohort takes its place.
        table.remove_all(&[1]);
        let mut admit = table.admit(None);
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
        let mut admit = table.admit(None);
        for key in 0..many.len() * 3 {
            admit.insert(key, TaskInfo::from_parts(None, many[key % many.len()]));
        }
        drop(admit);
        let expected: Vec<_> = (0..many.len() * 3).map(|k| many[k % many.len()]).collect();
        assert_eq!(sites(&table), expected);
    }
}
