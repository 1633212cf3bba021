//! The one clock all of hatchery's time goes through.
//!
//! Deadlines are stored in a cancel scope's atomic state as nanoseconds since a
//! process-wide epoch, so that a checkpoint can compare them with one load.
//! Encoding: `0` is reserved for "cancelled" and `u64::MAX` for "no deadline",
//! so every real instant maps into `1..u64::MAX`.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// State value of a scope that is effectively cancelled.
pub(crate) const CANCELLED: u64 = 0;
/// State value of a scope with no effective deadline.
pub(crate) const NEVER: u64 = u64::MAX;

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// The current time.
pub(crate) fn now() -> Instant {
    // Force the epoch first so that `now() >= epoch` always holds.
    let _ = *EPOCH;
    Instant::now()
}

/// Encodes an instant; instants before the epoch all map to 1 (long past).
pub(crate) fn to_nanos(instant: Instant) -> u64 {
    match instant.checked_duration_since(*EPOCH) {
        Some(elapsed) => elapsed.as_nanos().clamp(1, u128::from(NEVER - 1)) as u64,
        None => 1,
    }
}

/// Decodes a finite state value back into an instant.
pub(crate) fn from_nanos(nanos: u64) -> Instant {
    *EPOCH + Duration::from_nanos(nanos)
}

pub(crate) fn now_nanos() -> u64 {
    to_nanos(now())
}

/// A timer that fires at `instant`.
pub(crate) fn timer_at(instant: Instant) -> async_io::Timer {
    async_io::Timer::at(instant)
}
