#![allow(dead_code)]
use std::sync::Mutex;
use std::time::Duration;

pub use hatchery::testing::run as vrun;

pub type Log = Mutex<Vec<String>>;

pub fn push(log: &Log, s: impl Into<String>) {
    log.lock().unwrap().push(s.into());
}
pub fn entries(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// The messages of the failures of a nursery error (untyped).
pub fn failures(error: &hatchery::Error) -> Vec<String> {
    match error.downcast_ref::<hatchery::NurseryError>() {
        Some(ne) => ne.errors().map(|e| e.to_string()).collect(),
        None => vec![format!("<not a NurseryError: {error}>")],
    }
}

pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// trio's `wait_all_tasks_blocked` under the autojump clock: a sleep of one
/// nanosecond returns only once every other task is idle.
pub async fn wait_all_tasks_blocked() {
    hatchery::CancelScope::new()
        .shield(true)
        .run(async {
            hatchery::sleep(Duration::from_nanos(1)).await?;
            Ok(())
        })
        .await
        .unwrap();
}

/// An Event: a never-entered cancel scope's handle.
#[derive(Clone)]
pub struct Event(hatchery::CancelHandle);
impl Event {
    pub fn new() -> Self {
        Event(hatchery::CancelScope::new().handle())
    }
    pub fn set(&self) {
        self.0.cancel()
    }
    pub fn is_set(&self) -> bool {
        self.0.cancel_called()
    }
    /// Waits, as a cancellation point (like trio's Event.wait()).
    pub async fn wait(&self) -> Result<(), hatchery::Cancelled> {
        use hatchery::CancellableExt;
        self.0.cancelled().cancellable().await
    }
}
