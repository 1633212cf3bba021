//! Waiting for a scope to be cancelled (and, optionally, for a time).
//!
//! Scopes never arm timers themselves; whoever *waits* does. A waiter listens
//! to the node (which notifies its waiters on every change of its effective state),
//! re-checks, and arms one timer at the earlier of its own target and the
//! node's effective deadline. Listening before the re-check means no change can
//! slip between the check and the sleep.
//!
//! A task that a nursery polls, waiting on that nursery's own scope with the
//! waker the nursery polls it with, does not listen: the nursery listens once
//! for all of them and polls them all again after every change (`context`
//! invariant 2, nursery invariant 5). A wait polled with another waker is
//! inside a combinator that would not re-poll it: it listens.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_lite::FutureExt;

use super::tree::{Listener, Node};
use crate::clock::{self, CANCELLED, NEVER};
use crate::context;

/// Why a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woke {
    /// The node is effectively cancelled.
    Cancelled,
    /// The target instant passed.
    Elapsed,
}

#[derive(Default)]
pub(crate) struct Wait {
    /// The listener to the node waited on: a future polled in another scope
    /// than before listens to that scope instead.
    listener: Option<Listener>,
    timer: Option<(Instant, clock::Timer)>,
}

impl Wait {
    /// Polls until the current scope is cancelled (never, outside any
    /// scope). In the common cases (the scope is cancelled; or nothing
    /// applies to it and its nursery re-polls this task on any change) it
    /// answers without taking a reference to the scope's node.
    pub(crate) fn poll_current(&mut self, cx: &mut Context<'_>) -> Poll<Woke> {
        if self.listener.is_none() && self.timer.is_none() {
            let quick = context::peek(cx.waker(), |node, covered| {
                match node.map(|node| node.state()) {
                    Some(CANCELLED) => Some(Poll::Ready(Woke::Cancelled)),
                    Some(NEVER) if covered => Some(Poll::Pending),
                    _ => None,
                }
            });
            if let Some(answer) = quick {
                if answer.is_ready() {
                    context::tell();
                }
                return answer;
            }
        }
        self.poll_current_slow(cx)
    }

    /// `poll_current` past its quick answers: out of line, so that those
    /// stay a few instructions.
    #[inline(never)]
    fn poll_current_slow(&mut self, cx: &mut Context<'_>) -> Poll<Woke> {
        if self.timer.is_none()
            && let Some(listener) = &mut self.listener
        {
            // Listening already to the current scope, which has neither a
            // deadline nor a cancel, for a task its poller does not cover
            // (a parallel child's wait, each poll): as `poll` would, poll
            // the listener, without a reference to the node taken and let
            // go (a cache line every thread of the runtime writes).
            let listening = context::peek(cx.waker(), |node, covered| {
                !covered && node.is_some_and(|node| Arc::ptr_eq(node, listener.node()))
            });
            if listening && listener.node().state() == NEVER {
                if Pin::new(listener).poll(cx).is_pending() {
                    return Poll::Pending;
                }
                // Notified: look again, as `poll` does.
                self.listener = None;
            }
        }
        self.poll(context::current().as_ref(), None, cx)
    }

    /// Polls until `node` is cancelled or `target` passes. Without a node the
    /// wait is never cancelled; without either it never ends.
    pub(crate) fn poll(
        &mut self,
        node: Option<&Arc<Node>>,
        target: Option<Instant>,
        cx: &mut Context<'_>,
    ) -> Poll<Woke> {
        // A listener made in this call already holds `cx`'s waker.
        let mut fresh = false;
        loop {
            if node.is_some_and(|node| node.check().is_err()) {
                self.listener = None;
                context::tell();
                return Poll::Ready(Woke::Cancelled);
            }
            if target.is_some_and(|target| clock::now() >= target) {
                return Poll::Ready(Woke::Elapsed);
            }
            let listening = match (node, &self.listener) {
                (None, _) => true,
                // The task's poller re-polls it on every change of the node
                // (context invariant 2): nothing to listen to.
                (Some(node), _) if context::covers(node, cx.waker()) => {
                    self.listener = None;
                    true
                }
                (Some(node), Some(listener)) => Arc::ptr_eq(node, listener.node()),
                (Some(_), None) => false,
            };
            if let (Some(node), false) = (node, listening) {
                self.listener = Some(node.listen_with(cx.waker()));
                fresh = true;
                continue; // re-check now that no change can be missed
            }
            let scope_deadline = node.and_then(|node| node.deadline_instant(node.state()));
            let wake_at = match (target, scope_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match (wake_at, &mut self.timer) {
                (None, timer) => *timer = None,
                (Some(at), Some((armed, timer))) if *armed != at => {
                    timer.set_at(at);
                    *armed = at;
                }
                (Some(at), slot @ None) => *slot = Some((at, clock::timer_at(at))),
                (Some(_), Some(_)) => {}
            }
            if let Some(listener) = &mut self.listener
                && !std::mem::take(&mut fresh)
                && Pin::new(listener).poll(cx).is_ready()
            {
                self.listener = None;
                continue;
            }
            if let Some((_, timer)) = &mut self.timer
                && timer.poll(cx).is_ready()
            {
                self.timer = None;
                continue;
            }
            return Poll::Pending;
        }
    }
}
