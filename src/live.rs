//! Live-object counters, for leak checks (the `test-util` feature).
//!
//! A [`Token`] is embedded in every object that is counted: a task's future,
//! a cancel scope's node, a waiter's listener. It counts itself in when made
//! and out when dropped, so a counter is exactly the number of such objects
//! alive in the process. Without the feature a token is a zero-sized type
//! with no `Drop`, and counting costs nothing.

// Without the feature only the tokens are used.
#![cfg_attr(not(feature = "test-util"), allow(dead_code))]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pub(crate) const TASKS: usize = 0;
pub(crate) const SCOPES: usize = 1;
pub(crate) const LISTENERS: usize = 2;

#[cfg(feature = "test-util")]
pub(crate) static COUNTS: [std::sync::atomic::AtomicUsize; 3] = [
    std::sync::atomic::AtomicUsize::new(0),
    std::sync::atomic::AtomicUsize::new(0),
    std::sync::atomic::AtomicUsize::new(0),
];

/// How many objects of kind `KIND` are alive.
#[cfg(feature = "test-util")]
pub(crate) fn count(kind: usize) -> usize {
    COUNTS[kind].load(std::sync::atomic::Ordering::SeqCst)
}

/// Counts one live object of kind `KIND` while it exists.
#[derive(Debug)]
pub(crate) struct Token<const KIND: usize>(());

impl<const KIND: usize> Token<KIND> {
    #[inline(always)]
    pub(crate) fn new() -> Self {
        #[cfg(feature = "test-util")]
        COUNTS[KIND].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Token(())
    }
}

#[cfg(feature = "test-util")]
impl<const KIND: usize> Drop for Token<KIND> {
    fn drop(&mut self) {
        COUNTS[KIND].fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A task's future, counted while it exists.
    pub(crate) struct Counted<F> {
        #[pin]
        future: F,
        token: Token<TASKS>,
    }
}

impl<F> Counted<F> {
    pub(crate) fn new(future: F) -> Self {
        Counted {
            future,
            token: Token::new(),
        }
    }
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().future.poll(cx)
    }
}
