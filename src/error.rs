//! Errors: [`Cancelled`], the trait that lets user error types carry it
//! ([`CancelError`]), [`TimedOut`], the multi-error a nursery returns
//! ([`NurseryError`]) and [`SpawnError`].
//!
//! Invariant: a `Cancelled` is never recorded as a task's *failure*. It is the
//! normal way a task unwinds out of a cancelled scope, and the scope that caused
//! it is the one that catches it.

use std::error::Error as StdError;
use std::fmt;
use std::io;

use crate::cancel::reason::Signal;
use crate::task::TaskInfo;

/// The error every checkpoint returns once its cancel scope is cancelled.
///
/// Propagate it with `?`; the cancel scope that was cancelled catches it (see
/// the crate documentation for the catching rule). Cancellation is
/// level-triggered: every later checkpoint in the same scope returns it again.
///
/// # Examples
///
/// ```
/// use hatchery::{CancelScope, Cancelled, checkpoint};
///
/// # futures::executor::block_on(async {
/// let scope = CancelScope::new();
/// scope.handle().cancel();
/// let caught = scope
///     .run(async {
///         let first: Result<(), Cancelled> = checkpoint().await;
///         assert_eq!(first, Err(Cancelled));
///         checkpoint().await?; // fails again, and unwinds
///         unreachable!("a cancelled scope never gets past a checkpoint");
///         #[allow(unreachable_code)]
///         Ok(())
///     })
///     .await;
/// assert!(matches!(caught, Ok(None))); // the scope caught its own cancellation
/// # });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Cancelled;

impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "the enclosing cancel scope was cancelled; unwind with `?` so the scope can catch it",
        )
    }
}

impl StdError for Cancelled {}

/// An error type that can carry a [`Cancelled`].
///
/// Cancel scopes and nurseries need to tell "this task unwound because it was
/// cancelled" apart from a real failure. Implement this for your own error type
/// (usually with a variant holding `Cancelled`) to use it in scopes and
/// nurseries. It is implemented for [`Cancelled`], `std::io::Error`,
/// `Box<dyn StdError + Send + Sync>`, `Box<dyn StdError>` and [`NurseryError`].
///
/// # Examples
///
/// ```
/// use hatchery::{CancelError, CancelScope, Cancelled, checkpoint};
///
/// #[derive(Debug)]
/// enum AppError {
///     Cancelled,
///     Parse(String),
/// }
///
/// impl From<Cancelled> for AppError {
///     fn from(_: Cancelled) -> Self {
///         AppError::Cancelled
///     }
/// }
///
/// impl CancelError for AppError {
///     fn is_cancelled(&self) -> bool {
///         matches!(self, AppError::Cancelled)
///     }
/// }
///
/// # futures::executor::block_on(async {
/// let scope = CancelScope::new();
/// scope.handle().cancel();
/// let out = scope
///     .run_typed(async {
///         checkpoint().await?;
///         Err::<(), _>(AppError::Parse("never reached".into()))
///     })
///     .await;
/// assert!(matches!(out, Ok(None)));
/// # });
/// ```
///
/// If such an error also reaches the untyped API ([`Error`], or any
/// `Box<dyn Error>`) through `?`, let its `source()` return the
/// [`Cancelled`] for that variant: a boxed error is recognised as a
/// cancellation through its chain of sources (`is_cancelled` cannot be
/// called through `dyn Error`). Without it, a cancellation boxed that way
/// counts as a failure.
///
/// ```
/// use std::fmt;
/// use hatchery::{CancelError, Cancelled};
///
/// #[derive(Debug)]
/// enum AppError {
///     Cancelled(Cancelled),
///     Parse(String),
/// }
///
/// impl fmt::Display for AppError {
///     fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
///         match self {
///             AppError::Cancelled(cancelled) => cancelled.fmt(f),
///             AppError::Parse(message) => write!(f, "parse error: {message}"),
///         }
///     }
/// }
///
/// impl std::error::Error for AppError {
///     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
///         match self {
///             AppError::Cancelled(cancelled) => Some(cancelled),
///             AppError::Parse(_) => None,
///         }
///     }
/// }
///
/// impl From<Cancelled> for AppError {
///     fn from(cancelled: Cancelled) -> Self {
///         AppError::Cancelled(cancelled)
///     }
/// }
///
/// impl CancelError for AppError {
///     fn is_cancelled(&self) -> bool {
///         matches!(self, AppError::Cancelled(_))
///     }
/// }
///
/// assert!(hatchery::Error::from(AppError::from(Cancelled)).is_cancelled());
/// assert!(!hatchery::Error::from(AppError::Parse("x".into())).is_cancelled());
/// ```
pub trait CancelError: From<Cancelled> + fmt::Debug {
    /// Whether this error is (or wraps) a [`Cancelled`].
    ///
    /// ```
    /// use hatchery::{CancelError, Cancelled};
    /// assert!(std::io::Error::from(Cancelled).is_cancelled());
    /// assert!(!std::io::Error::other("boom").is_cancelled());
    /// ```
    fn is_cancelled(&self) -> bool;

    /// For an error that holds several (a [`NurseryError`]): whether it
    /// carries a cancellation *besides* real failures. A scope that catches
    /// that cancellation records it ([`cancelled_caught`](crate::CancelHandle::cancelled_caught))
    /// and removes it with [`drop_cancelled`](Self::drop_cancelled), as trio
    /// splits an exception group, while the failures go on. The default:
    /// `false`.
    ///
    /// ```
    /// use hatchery::{CancelError, Cancelled, NurseryError};
    /// assert!(!NurseryError::<std::io::Error>::from(Cancelled).holds_cancelled());
    /// ```
    fn holds_cancelled(&self) -> bool {
        false
    }

    /// Removes the cancellation that [`holds_cancelled`](Self::holds_cancelled)
    /// reported (the scope that caught it is calling). The default does
    /// nothing.
    ///
    /// ```
    /// use hatchery::{CancelError, Cancelled};
    /// let mut error = Cancelled;
    /// error.drop_cancelled(); // nothing to split off a lone cancellation
    /// assert!(error.is_cancelled());
    /// ```
    fn drop_cancelled(&mut self) {}
}

impl CancelError for Cancelled {
    fn is_cancelled(&self) -> bool {
        true
    }
}

/// Whether a type-erased error is a cancellation: a `Cancelled`, or an error
/// that wraps one. Walks `io::Error`'s payload (its `source()` skips it) and
/// every other error's `source()` chain; a pure-cancellation `NurseryError`
/// reports `Cancelled` as its source, so nursery errors of any `E` are seen.
fn dyn_is_cancelled(error: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(error);
    // Bounded, in case a hand-written `source()` chain loops.
    for _ in 0..64 {
        let Some(error) = next else { return false };
        if error.is::<Cancelled>() {
            return true;
        }
        next = match error.downcast_ref::<io::Error>() {
            Some(io_error) => io_error
                .get_ref()
                .map(|inner| inner as &(dyn StdError + 'static)),
            None => error.source(),
        };
    }
    false
}

impl From<Cancelled> for io::Error {
    /// A `Cancelled` becomes an `io::Error` of kind `Other` wrapping it.
    ///
    /// Not `Interrupted`: std retries reads and writes on `Interrupted`, which
    /// would turn a cancellation into a busy loop.
    fn from(cancelled: Cancelled) -> Self {
        io::Error::other(cancelled)
    }
}

impl CancelError for io::Error {
    fn is_cancelled(&self) -> bool {
        self.get_ref().is_some_and(|error| dyn_is_cancelled(error))
    }

    /// Looks into the `NurseryError<io::Error>` of several failures that
    /// `?` wrapped in an `io::Error`.
    fn holds_cancelled(&self) -> bool {
        self.get_ref()
            .and_then(|error| error.downcast_ref::<NurseryError<io::Error>>())
            .is_some_and(CancelError::holds_cancelled)
    }

    fn drop_cancelled(&mut self) {
        if let Some(error) = self
            .get_mut()
            .and_then(|error| error.downcast_mut::<NurseryError<io::Error>>())
        {
            error.drop_cancelled();
        }
    }
}

impl CancelError for Box<dyn StdError + Send + Sync> {
    fn is_cancelled(&self) -> bool {
        dyn_is_cancelled(self.as_ref())
    }
}

#[cfg(feature = "anyhow")]
impl CancelError for anyhow::Error {
    fn is_cancelled(&self) -> bool {
        self.chain().any(dyn_is_cancelled)
    }
}

#[cfg(feature = "eyre")]
impl CancelError for eyre::Report {
    fn is_cancelled(&self) -> bool {
        self.chain().any(dyn_is_cancelled)
    }
}

impl CancelError for Box<dyn StdError> {
    fn is_cancelled(&self) -> bool {
        dyn_is_cancelled(self.as_ref())
    }
}

/// The error of [`fail_after`](crate::fail_after) and [`fail_at`](crate::fail_at)
/// when their own deadline expired.
///
/// Your error type needs `From<TimedOut>` to use `fail_after`; `std::io::Error`
/// (kind `TimedOut`) and boxed errors have it.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use hatchery::{sleep, typed::fail_after};
///
/// # futures::executor::block_on(async {
/// let out: Result<(), std::io::Error> = fail_after(Duration::from_millis(5), async {
///     sleep(Duration::from_secs(3600)).await?;
///     Ok(())
/// })
/// .await;
/// assert_eq!(out.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
/// # });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TimedOut;

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the deadline of a fail_after/fail_at scope expired")
    }
}

impl StdError for TimedOut {}

impl From<TimedOut> for io::Error {
    fn from(timed_out: TimedOut) -> Self {
        io::Error::new(io::ErrorKind::TimedOut, timed_out)
    }
}

/// One task's failure inside a [`NurseryError`]: which task, and its error.
///
/// # Examples
///
/// ```
/// use hatchery::{typed::nursery, Nursery};
///
/// # futures::executor::block_on(async {
/// let err = nursery(|n: Nursery<'_, std::io::Error>| async move {
///     n.named("fetch").spawn(async { Err(std::io::Error::other("404")) });
///     Ok(())
/// })
/// .await
/// .unwrap_err();
/// let failure = &err.failures()[0];
/// assert_eq!(failure.task.name(), Some("fetch"));
/// assert_eq!(failure.error.to_string(), "404");
/// # });
/// ```
#[derive(Debug)]
pub struct TaskFailure<E> {
    /// The task that failed (the nursery body is a task too, named `nursery body`).
    pub task: TaskInfo,
    /// The error it returned.
    pub error: E,
}

/// What a nursery returns when it did not finish normally: **every** error its
/// tasks returned (in the order the nursery saw them: a parallel child's
/// error when the nursery next runs), and whether a cancellation from
/// outside is also unwinding through it.
///
/// A nursery never drops an error: the body's error, each child's error, and
/// errors raised while children cleaned up after the first failure are all here,
/// each with the [`TaskInfo`] of the task that raised it. [`Cancelled`] is never
/// listed as a failure.
///
/// A panic is not an error: when a task panics, the nursery (after every task
/// finished) resumes that panic with its original payload, so that callers can
/// downcast it, and this value is never built. The errors the nursery had
/// recorded by then, and any later panic, would be lost with the unwinding:
/// each is written to stderr first, with the task that raised it.
///
/// Convert it into your own error type with `?`: it implements [`std::error::Error`] (so
/// boxed errors take it), `std::io::Error: From<NurseryError<std::io::Error>>`
/// (a single failure comes out as itself) and
/// `Cancelled: From<NurseryError<Cancelled>>`.
///
/// # Examples
///
/// ```
/// use hatchery::{typed::nursery, Nursery};
///
/// # futures::executor::block_on(async {
/// let err = nursery(|n: Nursery<'_, std::io::Error>| async move {
///     n.spawn(async { Err(std::io::Error::other("first")) });
///     n.spawn(async { Err(std::io::Error::other("second")) });
///     Ok(())
/// })
/// .await
/// .unwrap_err();
/// let mut errors: Vec<String> = err.errors().map(|e| e.to_string()).collect();
/// errors.sort();
/// assert_eq!(errors, ["first", "second"]);
/// assert!(!err.is_cancelled());
/// # });
/// ```
#[derive(Debug)]
pub struct NurseryError<E = Error> {
    failures: Vec<TaskFailure<E>>,
    cancelled: bool,
    signal: Option<Signal>,
}

impl<E> NurseryError<E> {
    pub(crate) fn new(failures: Vec<TaskFailure<E>>, cancelled: bool) -> Self {
        NurseryError {
            failures,
            cancelled,
            signal: None,
        }
    }

    pub(crate) fn with_signal(mut self, signal: Signal) -> Self {
        self.signal = Some(signal);
        self.cancelled = true;
        self
    }

    /// The signal that interrupted the program (2 for SIGINT, 15 for
    /// SIGTERM), when a [`run`](crate::run) built with
    /// [`exit_on_signal(false)`](crate::Builder::exit_on_signal) was shut
    /// down by one. The conventional exit status is 128 + that number.
    ///
    /// ```
    /// use hatchery::{typed::nursery, Nursery};
    /// # futures::executor::block_on(async {
    /// let err = nursery(|_n: Nursery<'_, std::io::Error>| async move {
    ///     Err::<(), _>(std::io::Error::other("no signal here"))
    /// })
    /// .await
    /// .unwrap_err();
    /// assert_eq!(err.interrupted(), None);
    /// # });
    /// ```
    pub fn interrupted(&self) -> Option<Signal> {
        self.signal
    }

    /// Every failure, in the order the nursery saw them.
    ///
    /// ```
    /// # use hatchery::{typed::nursery, Nursery};
    /// # futures::executor::block_on(async {
    /// let err = nursery(|_n: Nursery<'_, std::io::Error>| async move {
    ///     Err::<(), _>(std::io::Error::other("body failed"))
    /// })
    ///     .await
    ///     .unwrap_err();
    /// assert_eq!(err.failures()[0].task.name(), Some("nursery body"));
    /// # });
    /// ```
    pub fn failures(&self) -> &[TaskFailure<E>] {
        &self.failures
    }

    /// Takes the failures out.
    ///
    /// ```
    /// # use hatchery::{typed::nursery, Nursery};
    /// # futures::executor::block_on(async {
    /// let err = nursery(|n: Nursery<'_, std::io::Error>| async move {
    ///     n.spawn(async { Err(std::io::ErrorKind::NotFound.into()) });
    ///     Ok(())
    /// })
    /// .await
    /// .unwrap_err();
    /// let failures = err.into_failures();
    /// assert_eq!(failures.len(), 1);
    /// assert_eq!(failures[0].error.kind(), std::io::ErrorKind::NotFound);
    /// # });
    /// ```
    pub fn into_failures(self) -> Vec<TaskFailure<E>> {
        self.failures
    }

    /// The errors alone, without the task that raised each.
    ///
    /// ```
    /// # use hatchery::{typed::nursery, Nursery};
    /// # futures::executor::block_on(async {
    /// let err = nursery(|n: Nursery<'_, std::io::Error>| async move {
    ///     n.spawn(async { Err(std::io::Error::other("one")) });
    ///     Ok(())
    /// })
    /// .await
    /// .unwrap_err();
    /// assert_eq!(err.errors().map(|e| e.to_string()).collect::<Vec<_>>(), ["one"]);
    /// # });
    /// ```
    pub fn errors(&self) -> impl Iterator<Item = &E> {
        self.failures.iter().map(|failure| &failure.error)
    }

    /// One error of your own type for this one, as `?` into that type
    /// needs: a pure cancellation comes out as `E::from(Cancelled)`, a
    /// single failure as its own error (as `io::Error`'s conversion does),
    /// several through `many`, which decides how to keep them. The signal
    /// of an interrupted `run` ([`interrupted`](Self::interrupted)) is not
    /// carried over: read it before, if the exit status matters.
    ///
    /// ```
    /// use hatchery::{typed::nursery, CancelError, Cancelled, Nursery, NurseryError};
    ///
    /// #[derive(Debug)]
    /// enum JobError {
    ///     Cancelled,
    ///     Failed(String),
    ///     Several(Vec<JobError>),
    /// }
    /// impl From<Cancelled> for JobError {
    ///     fn from(_: Cancelled) -> Self {
    ///         JobError::Cancelled
    ///     }
    /// }
    /// impl CancelError for JobError {
    ///     fn is_cancelled(&self) -> bool {
    ///         matches!(self, JobError::Cancelled)
    ///     }
    /// }
    /// // What lets `?` take a nested nursery's error.
    /// impl From<NurseryError<JobError>> for JobError {
    ///     fn from(error: NurseryError<JobError>) -> Self {
    ///         error.collapse(|many| {
    ///             JobError::Several(many.into_failures().into_iter().map(|f| f.error).collect())
    ///         })
    ///     }
    /// }
    ///
    /// async fn job() -> Result<(), JobError> {
    ///     nursery(|n: Nursery<'_, JobError>| async move {
    ///         n.spawn(async { Err(JobError::Failed("disk full".into())) });
    ///         Ok(())
    ///     })
    ///     .await?;
    ///     Ok(())
    /// }
    /// # futures::executor::block_on(async {
    /// assert!(matches!(job().await, Err(JobError::Failed(message)) if message == "disk full"));
    /// # });
    /// ```
    pub fn collapse(mut self, many: impl FnOnce(NurseryError<E>) -> E) -> E
    where
        E: From<Cancelled>,
    {
        match self.failures.len() {
            0 => E::from(Cancelled),
            1 => self
                .failures
                .pop()
                .map_or_else(|| Cancelled.into(), |failure| failure.error),
            _ => many(self),
        }
    }

    /// True when this holds nothing but a cancellation from outside the nursery:
    /// no task failed, the nursery was unwound by an enclosing cancelled scope.
    ///
    /// ```
    /// use hatchery::{typed::nursery, CancelScope, Nursery, NurseryError, Cancelled, sleep_forever};
    ///
    /// # futures::executor::block_on(async {
    /// let scope = CancelScope::new();
    /// scope.handle().cancel();
    /// scope
    ///     .run_typed(async {
    ///         let inner = nursery(|_n: Nursery<'_, Cancelled>| async move {
    ///             sleep_forever().await?;
    ///             Ok(())
    ///         })
    ///         .await;
    ///         let err: NurseryError<Cancelled> = inner.unwrap_err();
    ///         assert!(err.is_cancelled());
    ///         Err::<(), _>(Cancelled::from(err))
    ///     })
    ///     .await
    ///     .unwrap();
    /// # });
    /// ```
    pub fn is_cancelled(&self) -> bool {
        self.failures.is_empty() && self.cancelled
    }
}

impl<E: fmt::Display> fmt::Display for NurseryError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(signal) = self.signal {
            write!(f, "interrupted by {signal}")?;
            if self.failures.is_empty() {
                return Ok(());
            }
            f.write_str("; ")?;
        }
        match self.failures.len() {
            0 => return fmt::Display::fmt(&Cancelled, f),
            1 => write!(f, "1 task failed in a nursery: ")?,
            n => write!(f, "{n} tasks failed in a nursery: ")?,
        }
        for (i, failure) in self.failures.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", failure.task, failure.error)?;
        }
        Ok(())
    }
}

/// Only `Debug + Display` is asked of `E` (not `Error`), so that a
/// `NurseryError<Box<dyn StdError + Send + Sync>>` is itself an error and `?`
/// boxes it.
impl<E: fmt::Debug + fmt::Display> StdError for NurseryError<E> {
    /// `Cancelled` when this is a pure cancellation, so that code holding a
    /// boxed `NurseryError` (of any `E`) can still tell it is one.
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        static CANCELLED: Cancelled = Cancelled;
        self.is_cancelled().then_some(&CANCELLED as _)
    }
}

impl<E> From<Cancelled> for NurseryError<E> {
    fn from(_: Cancelled) -> Self {
        NurseryError::new(Vec::new(), true)
    }
}

impl<E: CancelError> CancelError for NurseryError<E> {
    fn is_cancelled(&self) -> bool {
        NurseryError::is_cancelled(self)
    }

    /// Also one held deeper, by the error of a failed child that was itself
    /// a nursery (as trio's split recurses into nested groups).
    fn holds_cancelled(&self) -> bool {
        !self.failures.is_empty()
            && (self.cancelled || self.failures.iter().any(|f| f.error.holds_cancelled()))
    }

    fn drop_cancelled(&mut self) {
        self.cancelled = false;
        for failure in &mut self.failures {
            failure.error.drop_cancelled();
        }
    }
}

impl From<NurseryError<Cancelled>> for Cancelled {
    /// Lossless: `Cancelled` is never recorded as a failure, and panics are
    /// resumed rather than stored, so a `NurseryError<Cancelled>` is always a
    /// pure cancellation.
    fn from(_: NurseryError<Cancelled>) -> Self {
        Cancelled
    }
}

impl From<NurseryError<io::Error>> for io::Error {
    /// A single failure comes out as itself; a pure cancellation as
    /// `io::Error::from(Cancelled)`; several failures as an `Other` error that
    /// wraps the whole `NurseryError` (reach it with `get_ref` + `downcast_ref`).
    fn from(mut error: NurseryError<io::Error>) -> Self {
        match error.failures.len() {
            0 => io::Error::from(Cancelled),
            1 => error
                .failures
                .pop()
                .map_or_else(|| Cancelled.into(), |f| f.error),
            _ => io::Error::other(error),
        }
    }
}

/// The error of hatchery's untyped API ([`nursery`](crate::nursery),
/// [`run`](crate::run)): any error, boxed, or a cancellation. With it, closures
/// need no type annotation, and `?` works on any [`std::error::Error`], on
/// [`Cancelled`], [`TimedOut`] and on the [`NurseryError`] of a nested nursery.
///
/// Like `anyhow::Error`, it does not implement [`std::error::Error`] itself
/// (that would conflict with converting from every error); it derefs to the
/// boxed error, converts into `Box<dyn StdError + Send + Sync>`, and says whether
/// it is a cancellation ([`CancelError::is_cancelled`]) however deep the
/// `Cancelled` sits in its chain of sources. For your own error type, use the
/// typed API ([`typed`](crate::typed)).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use hatchery::{fail_after, nursery, sleep, CancelError};
///
/// # futures::executor::block_on(async {
/// let out = nursery(|n| async move {
///     n.spawn(async {
///         let number: u32 = "42".parse()?; // any std error converts
///         assert_eq!(number, 42);
///         Ok(())
///     });
///     // A timeout is an error too; a cancellation unwinds with `?`.
///     fail_after(Duration::from_millis(10), async {
///         sleep(Duration::from_secs(3600)).await?;
///         Ok(())
///     })
///     .await?;
///     Ok(())
/// })
/// .await;
/// let error = out.unwrap_err();
/// let failures = error.downcast_ref::<hatchery::NurseryError>().unwrap().failures();
/// assert!(failures[0].error.downcast_ref::<hatchery::TimedOut>().is_some());
/// assert!(!failures[0].error.is_cancelled());
/// # });
/// ```
pub struct Error {
    inner: Box<dyn StdError + Send + Sync + 'static>,
}

impl Error {
    /// Wraps an error.
    ///
    /// ```
    /// let error = hatchery::Error::new(std::io::Error::other("disk full"));
    /// assert_eq!(error.to_string(), "disk full");
    /// ```
    pub fn new(error: impl StdError + Send + Sync + 'static) -> Self {
        Error {
            inner: Box::new(error),
        }
    }

    /// An error that is just a message.
    ///
    /// ```
    /// let error = hatchery::Error::msg("the handshake was not `OK MPD`");
    /// assert_eq!(error.to_string(), "the handshake was not `OK MPD`");
    /// ```
    pub fn msg(message: impl fmt::Display + fmt::Debug + Send + Sync + 'static) -> Self {
        /// A message as an error.
        struct Message<M>(M);
        impl<M: fmt::Debug> fmt::Debug for Message<M> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
        impl<M: fmt::Display> fmt::Display for Message<M> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
        impl<M: fmt::Debug + fmt::Display> StdError for Message<M> {}
        Error::new(Message(message))
    }

    /// The wrapped error, if it is a `T`.
    ///
    /// ```
    /// use hatchery::{Cancelled, Error};
    /// let error = Error::from(Cancelled);
    /// assert!(error.downcast_ref::<Cancelled>().is_some());
    /// ```
    pub fn downcast_ref<T: StdError + 'static>(&self) -> Option<&T> {
        self.inner.downcast_ref()
    }

    /// The wrapped error as a `T`, or the error back.
    ///
    /// ```
    /// use hatchery::Error;
    /// let error = Error::from(std::io::Error::other("gone"));
    /// let io_error: std::io::Error = error.downcast().unwrap();
    /// assert_eq!(io_error.to_string(), "gone");
    /// ```
    pub fn downcast<T: StdError + 'static>(self) -> Result<T, Self> {
        match self.inner.downcast() {
            Ok(error) => Ok(*error),
            Err(inner) => Err(Error { inner }),
        }
    }

    /// Whether this is (or wraps) a [`Cancelled`], however deep in its chain
    /// of sources: the same as [`CancelError::is_cancelled`], without the
    /// trait in scope.
    ///
    /// ```
    /// use hatchery::{Cancelled, Error};
    /// assert!(Error::from(Cancelled).is_cancelled());
    /// assert!(!Error::msg("boom").is_cancelled());
    /// ```
    pub fn is_cancelled(&self) -> bool {
        dyn_is_cancelled(self.inner.as_ref())
    }

    /// The boxed error.
    ///
    /// ```
    /// let boxed = hatchery::Error::msg("boom").into_inner();
    /// assert_eq!(boxed.to_string(), "boom");
    /// ```
    pub fn into_inner(self) -> Box<dyn StdError + Send + Sync + 'static> {
        self.inner
    }
}

impl<E: StdError + Send + Sync + 'static> From<E> for Error {
    fn from(error: E) -> Self {
        Error::new(error)
    }
}

impl std::ops::Deref for Error {
    type Target = dyn StdError + Send + Sync + 'static;

    fn deref(&self) -> &Self::Target {
        &*self.inner
    }
}

impl AsRef<dyn StdError + Send + Sync + 'static> for Error {
    fn as_ref(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.inner
    }
}

impl From<Error> for Box<dyn StdError + Send + Sync + 'static> {
    fn from(error: Error) -> Self {
        error.inner
    }
}

impl From<Error> for Box<dyn StdError + 'static> {
    fn from(error: Error) -> Self {
        error.inner
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl CancelError for Error {
    fn is_cancelled(&self) -> bool {
        Error::is_cancelled(self)
    }

    /// Looks into a nursery error it wraps: of [`Error`], `io::Error` or
    /// [`Cancelled`] (and `anyhow::Error`, `eyre::Report` with their
    /// features), the nurseries whose `?` makes an `Error`.
    fn holds_cancelled(&self) -> bool {
        macro_rules! any_holds {
            ($($error:ty),*) => {
                false $(|| self
                    .downcast_ref::<NurseryError<$error>>()
                    .is_some_and(CancelError::holds_cancelled))*
            };
        }
        #[cfg(feature = "anyhow")]
        if any_holds!(anyhow::Error) {
            return true;
        }
        #[cfg(feature = "eyre")]
        if any_holds!(eyre::Report) {
            return true;
        }
        any_holds!(Error, io::Error, Cancelled)
    }

    fn drop_cancelled(&mut self) {
        macro_rules! drop_in {
            ($($error:ty),*) => {
                $(if let Some(error) = self.inner.downcast_mut::<NurseryError<$error>>() {
                    error.drop_cancelled();
                })*
            };
        }
        #[cfg(feature = "anyhow")]
        drop_in!(anyhow::Error);
        #[cfg(feature = "eyre")]
        drop_in!(eyre::Report);
        drop_in!(Error, io::Error, Cancelled);
    }
}

/// `Result<T, hatchery::Error>`, for the bodies of the untyped API.
///
/// ```
/// async fn fetch() -> hatchery::Result<u32> {
///     Ok("7".parse()?)
/// }
/// assert_eq!(futures::executor::block_on(fetch()).unwrap(), 7);
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a task could not be spawned.
///
/// # Examples
///
/// ```
/// use hatchery::{nursery, Nursery, SpawnError, Cancelled};
///
/// # futures::executor::block_on(async {
/// let mut escaped = None;
/// nursery(|n| {
///     escaped = Some(n.clone());
///     async { Ok(()) }
/// })
/// .await
/// .unwrap();
/// let n = escaped.unwrap();
/// assert_eq!(n.try_spawn(async { Ok(()) }), Err(SpawnError::Closed));
/// # });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SpawnError {
    /// The nursery already finished: its body returned and its last child
    /// exited, so nothing would wait for a new child.
    Closed,
    /// `spawn_parallel` was called outside [`run`](crate::run), so there is
    /// no default executor to run the child on.
    NoExecutor,
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::Closed => f.write_str(
                "cannot spawn into a nursery that has already closed (its body and all its \
                 children finished); spawn while the nursery is still running, e.g. from its \
                 body or one of its children, or open a new nursery",
            ),
            SpawnError::NoExecutor => f.write_str(
                "spawn_parallel() needs the executor of a surrounding hatchery::run (or, with \
                 the `tokio` feature, a tokio runtime), and there is none on this thread; use \
                 spawn_on(&executor, child) with your own executor (an \
                 async_executor::Executor, or a tokio Handle with the `tokio` feature)",
            ),
        }
    }
}

impl StdError for SpawnError {}
