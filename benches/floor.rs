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

mod common;

use common::parallel_executor;
use criterion::{Criterion, criterion_group, criterion_main};

fn floor(c: &mut Criterion) {
    let mut group = c.benchmark_group("spawn_join_floor");
    group.bench_function("local_executor", |b| {
        let executor = async_executor::LocalExecutor::new();
        b.iter(|| common::local_executor_spawn_join(&executor))
    });
    group.bench_function("executor_2_threads", |b| {
        let executor = parallel_executor();
        b.iter(|| common::executor_spawn_join(executor))
    });
    group.bench_function("hatchery_parallel", |b| {
        let executor = parallel_executor();
        b.iter(|| common::hatchery_parallel_spawn_join(executor))
    });
    group.finish();
}

criterion_group!(benches, floor);
criterion_main!(benches);
