//! The floor under `spawn_join/hatchery_parallel`: what the same workload
//! costs on the same 2-thread async-executor `Executor` with no hatchery at
//! all, next to the single-threaded `LocalExecutor` row that
//! `benches/compare.rs` compares `hatchery_parallel` against.
//!
//! ```text
//! cargo bench --bench floor
//! ```
//!
//! Ratios of interest, from one run: `executor_2_threads / local_executor` is
//! the cost of crossing threads that no library on top of this executor can
//! avoid; `hatchery_parallel / executor_2_threads` is hatchery's own share.

use criterion::{Criterion, criterion_group, criterion_main};
use futures_lite::future::{block_on, yield_now};
use hatchery::{Cancelled, Nursery, nursery};

const CHILDREN: usize = 10_000;

/// An async-executor `Executor` run by 2 worker threads for the whole bench
/// (as in `benches/compare.rs`).
fn parallel_executor() -> &'static async_executor::Executor<'static> {
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

fn floor(c: &mut Criterion) {
    let mut group = c.benchmark_group("spawn_join_floor");
    group.bench_function("local_executor", |b| {
        let executor = async_executor::LocalExecutor::new();
        b.iter(|| {
            block_on(executor.run(async {
                let tasks: Vec<_> = (0..CHILDREN)
                    .map(|_| executor.spawn(async { yield_now().await }))
                    .collect();
                for task in tasks {
                    task.await;
                }
            }))
        })
    });
    group.bench_function("executor_2_threads", |b| {
        let executor = parallel_executor();
        b.iter(|| {
            block_on(async {
                let tasks: Vec<_> = (0..CHILDREN)
                    .map(|_| executor.spawn(async { yield_now().await }))
                    .collect();
                for task in tasks {
                    task.await;
                }
            })
        })
    });
    group.bench_function("hatchery_parallel", |b| {
        let executor = parallel_executor();
        b.iter(|| {
            block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
                for _ in 0..CHILDREN {
                    n.spawn_on(executor, async {
                        yield_now().await;
                        Ok(())
                    });
                }
                Ok(())
            }))
            .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, floor);
criterion_main!(benches);
