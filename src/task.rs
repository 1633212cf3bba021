//! The identity of a task: an optional name and the place it was spawned from.
//!
//! Every child of a nursery carries a [`TaskInfo`]. It names the task in
//! [`NurseryError`](crate::NurseryError)s, in [`CancelReason::TaskFailed`](crate::CancelReason),
//! and (later) in the shutdown report, so that "which task failed?" and "who is
//! still running?" always have an answer that points at a line of source.

use std::borrow::Cow;
use std::fmt;
use std::panic::Location;

/// The name (if any) and spawn location of a task.
///
/// Unnamed tasks still know where they were spawned: [`Nursery::spawn`](crate::Nursery::spawn)
/// is `#[track_caller]`, so the location is the line that called it.
///
/// # Examples
///
/// ```
/// use hatchery::{typed::nursery, Nursery, NurseryError};
///
/// # futures::executor::block_on(async {
/// let result = nursery(|n: Nursery<'_, std::io::Error>| async move {
///     n.named("loader").spawn(async { Err(std::io::Error::other("disk on fire")) });
///     Ok(())
/// })
/// .await;
/// let err: NurseryError<std::io::Error> = result.unwrap_err();
/// let task = &err.failures()[0].task;
/// assert_eq!(task.name(), Some("loader"));
/// assert!(task.location().file().ends_with(".rs"));
/// # });
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct TaskInfo {
    name: Option<Cow<'static, str>>,
    location: &'static Location<'static>,
}

impl TaskInfo {
    /// Describes a task spawned at the caller's location.
    ///
    /// ```
    /// let info = hatchery::TaskInfo::new(Some("worker".into()));
    /// assert_eq!(info.name(), Some("worker"));
    /// assert_eq!(info.location().line(), line!() - 2);
    /// ```
    #[track_caller]
    pub fn new(name: Option<Cow<'static, str>>) -> Self {
        TaskInfo {
            name,
            location: Location::caller(),
        }
    }

    /// The task's name, if it was given one.
    ///
    /// ```
    /// assert_eq!(hatchery::TaskInfo::new(None).name(), None);
    /// ```
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The source location the task was spawned from.
    ///
    /// ```
    /// let info = hatchery::TaskInfo::new(None);
    /// assert_eq!(info.location().file(), file!());
    /// ```
    pub fn location(&self) -> &'static Location<'static> {
        self.location
    }

    pub(crate) fn from_parts(
        name: Option<Cow<'static, str>>,
        location: &'static Location<'static>,
    ) -> Self {
        TaskInfo { name, location }
    }

    pub(crate) fn into_parts(self) -> (Option<Cow<'static, str>>, &'static Location<'static>) {
        (self.name, self.location)
    }
}

impl fmt::Debug for TaskInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The name of a nursery's body, as a task (`TaskInfo::body`): the start
/// of a longer string, so that no string literal of a program's, which the
/// compiler may merge with an identical one of ours, has its address.
static BODY_NAME: &str = {
    let marked = "nursery body (hatchery)";
    marked.split_at(12).0
};

impl TaskInfo {
    /// The body of the nursery opened at the caller's location.
    #[track_caller]
    pub(crate) fn body() -> Self {
        TaskInfo::new(Some(Cow::Borrowed(BODY_NAME)))
    }

    /// Made by `body` (the same string, not only the same text).
    fn is_body(&self) -> bool {
        matches!(&self.name, Some(Cow::Borrowed(name)) if std::ptr::eq(*name, BODY_NAME))
    }
}

impl fmt::Display for TaskInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            _ if self.is_body() => write!(f, "the body of the nursery at {}", self.location),
            Some(name) => write!(f, "task `{name}` spawned at {}", self.location),
            None => write!(f, "unnamed task spawned at {}", self.location),
        }
    }
}

/// Wraps a task's future: with the `tracing` feature, runs it inside a span
/// named `task` whose fields are the task's name and spawn location; with
/// `test-util`, counts it among the live tasks. Otherwise returns it as it is.
#[inline(always)]
pub(crate) fn instrument<F: std::future::Future>(
    future: F,
    info: &TaskInfo,
) -> impl std::future::Future<Output = F::Output> + use<F> {
    #[cfg(feature = "tracing")]
    let future = {
        use tracing::Instrument;
        let span = tracing::info_span!(
            "task",
            name = info.name().unwrap_or("unnamed"),
            spawned_at = %info.location(),
        );
        future.instrument(span)
    };
    #[cfg(not(feature = "tracing"))]
    let _ = info;
    #[cfg(feature = "test-util")]
    let future = crate::live::Counted::new(future);
    future
}

/// What a task did in one poll (`context` invariant 3), and what the
/// nursery notes of it for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Flags(u8);

impl Flags {
    pub(crate) const PARKED: u8 = 1;
    pub(crate) const TOLD: u8 = 2;
    pub(crate) const SHIELDED: u8 = 4;
    pub(crate) const REMOTE: u8 = 8;
    pub(crate) const STALE: u8 = 16;
    pub(crate) const HELD: u8 = 32;

    /// A hatchery await parked the task.
    pub(crate) fn parked(self) -> bool {
        self.0 & Self::PARKED != 0
    }

    /// The task met `Cancelled` (or waits on a scope that is being
    /// cancelled).
    pub(crate) fn told(self) -> bool {
        self.0 & Self::TOLD != 0
    }

    /// A hatchery await that parked the task was dropped before the poll
    /// ended: `parked` may not stand for a live one (`context` invariant 3).
    pub(crate) fn stale(self) -> bool {
        self.0 & Self::STALE != 0
    }

    /// The task registered a hold in this poll (`context` invariant 4).
    pub(crate) fn held(self) -> bool {
        self.0 & Self::HELD != 0
    }

    /// The task waits behind a shield.
    pub(crate) fn shielded(self) -> bool {
        self.0 & Self::SHIELDED != 0
    }

    /// The task waits for a child that runs on another thread.
    pub(crate) fn remote(self) -> bool {
        self.0 & Self::REMOTE != 0
    }

    /// Whether the report has something to say about the task.
    pub(crate) fn noteworthy(self) -> bool {
        self.0 & (Self::TOLD | Self::SHIELDED | Self::REMOTE) != 0
    }

    pub(crate) fn bits(self) -> u8 {
        self.0
    }

    pub(crate) fn from_bits(bits: u8) -> Self {
        Flags(bits)
    }
}
