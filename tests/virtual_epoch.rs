//! A virtual clock created before hatchery first reads the time, in a fresh
//! process (this file is its own test binary, with one test, so nothing else
//! has read the time first).
//!
//! Found by the fuzz program (issue 16): a program that ran more than 20 ms of
//! real time before its first deadline saw a fresh 20-tick deadline as long
//! past: the encoding's epoch was taken at that first deadline, after the
//! virtual clock's start, and instants before the epoch read as "long ago".

use std::time::Duration;

use hatchery::testing::VirtualClock;
use hatchery::{CancelScope, checkpoint, sleep};

#[test]
fn a_deadline_set_after_real_time_passed_under_a_fresh_virtual_clock_is_not_past() {
    let clock = VirtualClock::new();
    let start = clock.now();
    // Real time passes before the program uses any deadline.
    std::thread::sleep(Duration::from_millis(30));
    let out = clock.run(async {
        let scope = CancelScope::new().timeout(Duration::from_millis(20));
        let handle = scope.handle();
        let inner = scope
            .run_typed(async {
                checkpoint().await?;
                sleep(Duration::from_millis(5)).await?;
                Ok::<_, hatchery::Cancelled>("finished")
            })
            .await;
        (inner, handle.is_cancelled())
    });
    assert_eq!(out, (Ok(Some("finished")), false));
    assert_eq!(clock.now() - start, Duration::from_millis(5));
}
