//! Why a scope was cancelled ([`CancelReason`]), and the signals that can
//! cancel one ([`Signal`]: its number, name and conventional exit status, in
//! one place).

use std::borrow::Cow;
use std::fmt;

use crate::task::TaskInfo;

/// Why a cancel scope was cancelled. The first reason recorded wins.
///
/// # Examples
///
/// ```
/// use hatchery::{CancelReason, CancelScope};
///
/// let scope = CancelScope::new();
/// let handle = scope.handle();
/// handle.cancel();
/// assert_eq!(handle.reason(), Some(CancelReason::Explicit));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelReason {
    /// [`CancelHandle::cancel`](crate::CancelHandle::cancel) was called.
    Explicit,
    /// The scope's deadline passed.
    Deadline,
    /// A task of the nursery that owns this scope failed (returned an error or
    /// panicked), so its siblings are being cancelled.
    TaskFailed(TaskInfo),
    /// The process received this signal.
    Signal(Signal),
    /// [`CancelHandle::cancel_with_reason`](crate::CancelHandle::cancel_with_reason)
    /// was called with this text.
    Message(Cow<'static, str>),
}

impl fmt::Display for CancelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CancelReason::Explicit => f.write_str("cancel() was called"),
            CancelReason::Deadline => f.write_str("its deadline passed"),
            CancelReason::TaskFailed(task) => write!(f, "a sibling failed: {task}"),
            CancelReason::Message(text) => f.write_str(text),
            CancelReason::Signal(signal) => write!(
                f,
                "the process received {signal} (signal {})",
                signal.number()
            ),
        }
    }
}

/// A signal that shuts a program down: its number, name and the exit
/// status a shell expects after it (128 + the number).
///
/// # Examples
///
/// ```
/// use hatchery::Signal;
///
/// assert_eq!(Signal::INT.number(), 2);
/// assert_eq!(Signal::TERM.to_string(), "SIGTERM");
/// assert_eq!(Signal::INT.exit_code(), 130);
/// // Debug output names it too, as it reads in an `{:?}` of an error.
/// assert_eq!(format!("{:?}", Signal::INT), "SIGINT");
/// assert_eq!(format!("{:?}", Signal::from_number(9)), "Signal(9)");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal(i32);

impl Signal {
    /// SIGINT, Ctrl+C: 2.
    pub const INT: Signal = Signal(2);
    /// SIGTERM, the polite kill: 15.
    pub const TERM: Signal = Signal(15);

    /// The signal with this number.
    ///
    /// ```
    /// assert_eq!(hatchery::Signal::from_number(15), hatchery::Signal::TERM);
    /// ```
    pub const fn from_number(number: i32) -> Signal {
        Signal(number)
    }

    /// Its number.
    ///
    /// ```
    /// assert_eq!(hatchery::Signal::TERM.number(), 15);
    /// ```
    pub const fn number(self) -> i32 {
        self.0
    }

    /// Its conventional name (`SIGINT`, `SIGTERM`; `signal` for another).
    ///
    /// ```
    /// assert_eq!(hatchery::Signal::INT.name(), "SIGINT");
    /// ```
    pub const fn name(self) -> &'static str {
        match self.0 {
            2 => "SIGINT",
            15 => "SIGTERM",
            _ => "signal",
        }
    }

    /// The exit status a shell expects of a program it interrupted: 128 +
    /// the number (130 after SIGINT, 143 after SIGTERM).
    ///
    /// ```
    /// assert_eq!(hatchery::Signal::TERM.exit_code(), 143);
    /// ```
    pub const fn exit_code(self) -> i32 {
        128 + self.0
    }
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            "signal" => f.debug_tuple("Signal").field(&self.0).finish(),
            name => f.write_str(name),
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
