//! What `benches/compare.rs` and `benches/floor.rs` share: the child count,
//! the 2-thread executor of the parallel rows, and the two `spawn_join`
//! workloads both files run (so the floor measures exactly what the
//! comparison does).

use futures_lite::future::{block_on, yield_now};
use hatchery::{Cancelled, Nursery, typed::nursery};

pub const CHILDREN: usize = 10_000;

/// An async-executor `Executor` run by 2 worker threads for the whole bench.
pub fn parallel_executor() -> &'static async_executor::Executor<'static> {
    static EXECUTOR: std::sync::OnceLock<&'static async_executor::Executor<'static>> =
        std::sync::OnceLock::new();
    EXECUTOR.get_or_init(|| {
        let executor: &'static async_executor::Executor<'static> =
            Box::leak(Box::new(async_executor::Executor::new()));
        for _ in 0..2 {
            std::thread::spawn(move || block_on(executor.run(std::future::pending::<()>())));
        }
        executor
    })
}

/// `spawn_join/hatchery_parallel`: `CHILDREN` children that yield once, each
/// spawned on `executor` into a nursery.
pub fn hatchery_parallel_spawn_join(executor: &'static async_executor::Executor<'static>) {
    block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
        for _ in 0..CHILDREN {
            n.spawn_on(executor, async {
                yield_now().await;
                Ok(())
            });
        }
        Ok(())
    }))
    .unwrap();
}

/// `spawn_join/async_executor`: the same children on a `LocalExecutor`,
/// spawned, then awaited in order.
pub fn local_executor_spawn_join(executor: &async_executor::LocalExecutor<'_>) {
    block_on(executor.run(async {
        let tasks: Vec<_> = (0..CHILDREN)
            .map(|_| executor.spawn(async { yield_now().await }))
            .collect();
        for task in tasks {
            task.await;
        }
    }));
}

/// `spawn_join/executor_2_threads` (the floor): the same children spawned
/// straight onto `executor`, then awaited in order.
#[allow(dead_code)] // not every bench runs every workload
pub fn executor_spawn_join(executor: &'static async_executor::Executor<'static>) {
    block_on(async {
        let tasks: Vec<_> = (0..CHILDREN)
            .map(|_| executor.spawn(async { yield_now().await }))
            .collect();
        for task in tasks {
            task.await;
        }
    })
}

/// `scale`: `n` children that wait to be cancelled, then cancelled.
#[allow(dead_code)] // not every bench runs every workload
pub fn scale(n: usize) {
    block_on(nursery(|nursery: Nursery<'_, Cancelled>| async move {
        for _ in 0..n {
            nursery.spawn(async {
                hatchery::sleep_forever().await?;
                Ok(())
            });
        }
        yield_now().await;
        yield_now().await;
        nursery.cancel_scope().cancel();
        Ok(())
    }))
    .unwrap();
}
