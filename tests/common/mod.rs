//! The runtime matrix: every core test file wraps its tests in `matrix!`,
//! which compiles them once per runtime, each in a module whose `block_on`
//! drives the test on that runtime.

#![allow(dead_code)]

use std::future::Future;

/// A plain `futures::executor::block_on`: no runtime at all.
pub fn futures_executor<F: Future>(future: F) -> F::Output {
    futures::executor::block_on(future)
}

/// async-executor with `THREADS` threads running it: this one, which polls
/// the test, and `THREADS - 1` workers.
pub fn async_executor<const THREADS: usize, F: Future>(future: F) -> F::Output {
    let executor = async_executor::Executor::new();
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    std::thread::scope(|scope| {
        // Dropped on every exit of this closure, panics included, so the
        // workers stop before the scope joins them.
        let _stop = stop_tx;
        for _ in 1..THREADS {
            let (executor, stop_rx) = (&executor, stop_rx.clone());
            scope.spawn(move || futures_lite::future::block_on(executor.run(stop_rx.recv())));
        }
        futures_lite::future::block_on(executor.run(future))
    })
}

/// tokio's current-thread runtime.
pub fn tokio_current_thread<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}

/// tokio's multi-thread runtime with 4 workers.
pub fn tokio_multi_thread<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}

/// Compiles the given test items once per runtime.
macro_rules! matrix {
    ($($items:tt)*) => {
        mod futures_executor {
            #[allow(unused_imports)]
            use super::*;
            use crate::common::futures_executor as block_on;
            $($items)*
        }
        mod async_executor_1_thread {
            #[allow(unused_imports)]
            use super::*;
            use crate::common::async_executor as run;
            fn block_on<F: std::future::Future>(future: F) -> F::Output {
                run::<1, F>(future)
            }
            $($items)*
        }
        mod async_executor_4_threads {
            #[allow(unused_imports)]
            use super::*;
            use crate::common::async_executor as run;
            fn block_on<F: std::future::Future>(future: F) -> F::Output {
                run::<4, F>(future)
            }
            $($items)*
        }
        mod tokio_current_thread {
            #[allow(unused_imports)]
            use super::*;
            use crate::common::tokio_current_thread as block_on;
            $($items)*
        }
        mod tokio_multi_thread {
            #[allow(unused_imports)]
            use super::*;
            use crate::common::tokio_multi_thread as block_on;
            $($items)*
        }
    };
}

pub(crate) use matrix;
