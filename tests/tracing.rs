//! With the `tracing` feature, every task runs inside a span named `task`
//! whose fields name it and say where it was spawned.
#![cfg(feature = "tracing")]

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use hatchery::{Cancelled, Nursery, typed::nursery};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Each event's fields, and the span it happened in.
type Events = Arc<Mutex<Vec<(String, Option<u64>)>>>;

/// Records each span as "name{field=value,...}", and the span each event
/// happened in.
#[derive(Default, Clone)]
struct Recorder {
    spans: Arc<Mutex<Vec<String>>>,
    current: Arc<Mutex<Vec<u64>>>,
    events: Events,
}

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={:?},", field.name(), value);
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = write!(self.0, "{}={},", field.name(), value);
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut fields = Fields(String::new());
        span.record(&mut fields);
        let mut spans = self.spans.lock().unwrap();
        spans.push(format!("{}{{{}}}", span.metadata().name(), fields.0));
        Id::from_u64(spans.len() as u64)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        let current = self.current.lock().unwrap().last().copied();
        self.events.lock().unwrap().push((fields.0, current));
    }
    fn enter(&self, span: &Id) {
        self.current.lock().unwrap().push(span.into_u64());
    }
    fn exit(&self, _: &Id) {
        self.current.lock().unwrap().pop();
    }
}

#[test]
fn each_task_runs_in_a_span_named_after_it() {
    let recorder = Recorder::default();
    tracing::subscriber::with_default(recorder.clone(), || {
        futures::executor::block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
            n.named("fetcher").spawn(async {
                tracing::info!("fetching");
                Ok(())
            });
            n.spawn(async {
                tracing::info!("anonymous work");
                Ok(())
            });
            Ok(())
        }))
        .unwrap();
    });
    let spans = recorder.spans.lock().unwrap().clone();
    assert_eq!(spans.len(), 2, "{spans:?}");
    assert!(
        spans[0].starts_with("task{name=fetcher,spawned_at="),
        "{spans:?}"
    );
    assert!(spans[0].contains("tests/tracing.rs:"), "{spans:?}");
    assert!(spans[1].starts_with("task{name=unnamed,"), "{spans:?}");
    // Each event happened inside its own task's span.
    let events = recorder.events.lock().unwrap().clone();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        events[0].0.contains("fetching") && events[0].1 == Some(1),
        "{events:?}"
    );
    assert!(
        events[1].0.contains("anonymous") && events[1].1 == Some(2),
        "{events:?}"
    );
}

/// A blocking child gets its `task` span too.
#[test]
fn a_blocking_child_has_a_span_named_after_it() {
    let recorder = Recorder::default();
    tracing::subscriber::with_default(recorder.clone(), || {
        futures::executor::block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
            n.named("blocker").spawn_blocking(|_| Ok(()));
            Ok(())
        }))
        .unwrap();
    });
    let spans = recorder.spans.lock().unwrap().clone();
    assert!(
        spans
            .iter()
            .any(|span| span.starts_with("task{name=blocker,spawned_at=")
                && span.contains("tests/tracing.rs:")),
        "{spans:?}"
    );
}
