//! Conformance tests of the progress port.
//!
//! Live delivery is awaited, never slept for: a test subscribes, then posts the update, then
//! awaits the next item (with a generous timeout that only turns a hang into a failure).
//! Time passes only through the fixture's clock, in steps well under two seconds, and nothing
//! asserts on exact timestamps or elapsed time.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures::StreamExt;
use spool_domain::limits::StoreLimits;
use spool_domain::names::{CorrelationId, OperationId, StepName};
use spool_domain::progress::{
    EventKind, Operation, OperationSpec, OperationState, ProgressEvent, ProgressUpdate, StepRef,
    StepSpec, MAX_MESSAGE_BYTES,
};

use crate::conformance::Factory;
use crate::{EventStream, PortError};

/// Lists this group's tests for [`crate::conformance_suite!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_progress {
    (#[$attr:meta] $factory:ident) => {
        $crate::__conformance_group!(
            #[$attr]
            $factory,
            conformance_progress,
            progress,
            [
                start_returns_a_snapshot_event,
                start_generates_distinct_ids,
                percent_follows_weighted_steps,
                event_ids_strictly_increase,
                events_after_returns_exactly_the_later_events,
                subscribe_sends_a_snapshot_then_live_events,
                subscribe_after_replays_then_goes_live,
                subscribe_after_trimmed_events_starts_with_a_snapshot,
                slow_subscriber_misses_nothing,
                terminal_states_refuse_updates,
                stream_ends_after_the_end_event,
                duplicate_id_conflicts,
                unknown_operation_is_not_found,
                invalid_updates_are_refused_and_change_nothing,
                invalid_plans_are_refused,
                event_cap_trims_the_oldest,
                correlation_id_is_preserved,
                operations_expire_after_their_last_update,
            ]
        );
    };
}

/// Longest wait for a stream item before the test fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(10);

fn op_id(s: &str) -> OperationId {
    OperationId::parse(s).unwrap()
}

fn step_name(i: usize) -> StepName {
    StepName::parse(format!("step-{i}")).unwrap()
}

/// A plan with one step per weight, named `step-0`, `step-1`, ...
fn spec(id: &str, weights: &[u32]) -> OperationSpec {
    OperationSpec {
        id: Some(op_id(id)),
        correlation_id: None,
        steps: weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| StepSpec {
                name: step_name(i),
                weight,
            })
            .collect(),
        message: None,
    }
}

fn at_step(index: usize, fraction: Option<f64>) -> ProgressUpdate {
    ProgressUpdate {
        step: Some(StepRef::Index(index)),
        fraction,
        ..ProgressUpdate::default()
    }
}

fn say(message: &str) -> ProgressUpdate {
    ProgressUpdate {
        message: Some(message.to_owned()),
        ..ProgressUpdate::default()
    }
}

fn finish(state: OperationState) -> ProgressUpdate {
    ProgressUpdate {
        state: Some(state),
        ..ProgressUpdate::default()
    }
}

/// The next stream item, which must be an event; `None` when the stream ended.
async fn next_event(stream: &mut EventStream) -> Option<ProgressEvent> {
    let item = tokio::time::timeout(PATIENCE, stream.next())
        .await
        .expect("the stream neither yielded nor ended");
    item.map(|r| r.expect("the stream yielded an error"))
}

fn assert_kind<T: std::fmt::Debug>(r: Result<T, PortError>, kind: &str, what: &str) {
    match (&r, kind) {
        (Err(PortError::Invalid(_)), "invalid")
        | (Err(PortError::NotFound { .. }), "not_found")
        | (Err(PortError::Conflict { .. }), "conflict") => {}
        _ => panic!("{what}: expected {kind}, got {r:?}"),
    }
}

/// Posts `n` message updates and returns their events.
async fn post_messages(
    fx: &crate::conformance::Fixture,
    id: &OperationId,
    n: usize,
) -> Vec<ProgressEvent> {
    let mut events = Vec::with_capacity(n);
    for i in 0..n {
        events.push(fx.progress.update(id, say(&format!("m{i}"))).await.unwrap());
    }
    events
}

/// `start` returns a `snapshot` event of a running operation at 0 % with the planned steps,
/// and `get` returns the same snapshot.
pub async fn start_returns_a_snapshot_event(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let mut s = spec("prog-start", &[2, 5]);
    s.message = Some("queued".into());
    let event = fx.progress.start(s).await.unwrap();
    assert_eq!(event.kind, EventKind::Snapshot);
    let op = &event.operation;
    assert_eq!(op.id, op_id("prog-start"));
    assert_eq!(op.state, OperationState::Running);
    assert_eq!(op.percent, 0.0);
    assert_eq!(op.message.as_deref(), Some("queued"));
    assert_eq!(op.created_at, op.updated_at);
    let steps: Vec<_> = op
        .steps
        .iter()
        .map(|s| (s.name.clone(), s.weight, s.fraction))
        .collect();
    assert_eq!(steps, vec![(step_name(0), 2, 0.0), (step_name(1), 5, 0.0)]);
    assert_eq!(
        fx.progress
            .get(&op_id("prog-start"))
            .await
            .unwrap()
            .as_ref(),
        Some(op)
    );
    let log = fx
        .progress
        .events_after(&op_id("prog-start"), None, 100)
        .await
        .unwrap();
    assert_eq!(
        log,
        vec![event],
        "the start event is the first retained event"
    );
}

/// Without an ID in the spec, `start` generates a fresh one per operation.
pub async fn start_generates_distinct_ids(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let mut s = spec("unused", &[1]);
    s.id = None;
    let a = fx.progress.start(s.clone()).await.unwrap().operation;
    let b = fx.progress.start(s).await.unwrap().operation;
    assert_ne!(a.id, b.id);
    assert_eq!(fx.progress.get(&a.id).await.unwrap(), Some(a));
    assert_eq!(fx.progress.get(&b.id).await.unwrap(), Some(b));
    assert_eq!(fx.progress.get(&op_id("unused")).await.unwrap(), None);
}

/// Percent is `100 * Σ weight·fraction / Σ weight`; naming a step completes the ones before
/// it; completing every step still leaves the operation running.
pub async fn percent_follows_weighted_steps(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let id = op_id("prog-weights");
    fx.progress
        .start(spec("prog-weights", &[1, 3]))
        .await
        .unwrap();

    let e = fx.progress.update(&id, at_step(0, None)).await.unwrap();
    assert_eq!(e.kind, EventKind::Progress);
    assert_eq!(e.operation.percent, 25.0);
    assert_eq!(e.operation.steps[0].fraction, 1.0);

    let by_name = ProgressUpdate {
        step: Some(StepRef::Name(step_name(1))),
        fraction: Some(0.5),
        ..ProgressUpdate::default()
    };
    let e = fx.progress.update(&id, by_name).await.unwrap();
    assert_eq!(e.operation.percent, 62.5);
    assert_eq!(e.operation.steps[1].fraction, 0.5);

    // Going back to step 0 with a fraction changes only that step.
    let e = fx
        .progress
        .update(&id, at_step(0, Some(0.0)))
        .await
        .unwrap();
    assert_eq!(e.operation.percent, 37.5);

    let e = fx.progress.update(&id, at_step(1, None)).await.unwrap();
    assert_eq!(e.operation.percent, 100.0);
    assert_eq!(e.kind, EventKind::Progress);
    assert_eq!(e.operation.state, OperationState::Running);
    assert_eq!(fx.progress.get(&id).await.unwrap(), Some(e.operation));
}

/// Every update's event ID is greater than all earlier ones, including the start event's,
/// also when many updates land within one millisecond; the log holds them in order.
pub async fn event_ids_strictly_increase(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let id = op_id("prog-ids");
    let start = fx.progress.start(spec("prog-ids", &[1])).await.unwrap();
    let mut events = vec![start];
    events.extend(post_messages(&fx, &id, 30).await);
    fx.clock.advance(Duration::from_millis(5)).await;
    events.extend(post_messages(&fx, &id, 30).await);
    for pair in events.windows(2) {
        assert!(pair[0].id < pair[1].id, "{} < {}", pair[0].id, pair[1].id);
    }
    let log = fx.progress.events_after(&id, None, 1000).await.unwrap();
    assert_eq!(log, events);
}

/// `events_after(Some(id))` returns exactly the retained events after `id`, oldest first, at
/// most `limit`.
pub async fn events_after_returns_exactly_the_later_events(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let id = op_id("prog-after");
    let start = fx.progress.start(spec("prog-after", &[1])).await.unwrap();
    let mut events = vec![start];
    events.extend(post_messages(&fx, &id, 6).await);

    let after = fx
        .progress
        .events_after(&id, Some(events[2].id), 100)
        .await
        .unwrap();
    assert_eq!(after, events[3..].to_vec());
    let limited = fx
        .progress
        .events_after(&id, Some(events[2].id), 2)
        .await
        .unwrap();
    assert_eq!(limited, events[3..5].to_vec());
    let none_after_last = fx
        .progress
        .events_after(&id, Some(events[6].id), 100)
        .await
        .unwrap();
    assert!(none_after_last.is_empty());
    let all = fx.progress.events_after(&id, None, 100).await.unwrap();
    assert_eq!(all, events);
}

/// Without `after`, a subscriber first gets a `snapshot` carrying the latest event's ID and
/// the current state, then every later event — each subscriber on its own.
pub async fn subscribe_sends_a_snapshot_then_live_events(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let id = op_id("prog-live");
    fx.progress.start(spec("prog-live", &[1, 1])).await.unwrap();
    let latest = fx
        .progress
        .update(&id, at_step(0, Some(0.5)))
        .await
        .unwrap();

    let mut first = fx.progress.subscribe(&id, None).await.unwrap();
    let mut second = fx.progress.subscribe(&id, None).await.unwrap();
    for stream in [&mut first, &mut second] {
        let snapshot = next_event(stream).await.unwrap();
        assert_eq!(snapshot.kind, EventKind::Snapshot);
        assert_eq!(snapshot.id, latest.id);
        assert_eq!(snapshot.operation, latest.operation);
    }

    // Posted after subscribing, from another task.
    let progress = fx.progress.clone();
    let posted = tokio::spawn(async move {
        let id = op_id("prog-live");
        let a = progress.update(&id, at_step(1, Some(0.25))).await.unwrap();
        let b = progress.update(&id, say("still going")).await.unwrap();
        (a, b)
    });
    let (a, b) = posted.await.unwrap();
    for stream in [&mut first, &mut second] {
        assert_eq!(next_event(stream).await.as_ref(), Some(&a));
        assert_eq!(next_event(stream).await.as_ref(), Some(&b));
    }
    assert_eq!(a.kind, EventKind::Progress);
    assert_eq!(b.operation.message.as_deref(), Some("still going"));
}

/// With `after`, a subscriber gets exactly the events after it, then live ones: no gap, no
/// duplicate.
pub async fn subscribe_after_replays_then_goes_live(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let id = op_id("prog-resume");
    fx.progress.start(spec("prog-resume", &[1])).await.unwrap();
    let events = post_messages(&fx, &id, 4).await;

    let mut stream = fx
        .progress
        .subscribe(&id, Some(events[0].id))
        .await
        .unwrap();
    let live = fx.progress.update(&id, say("live")).await.unwrap();
    for expected in events[1..].iter().chain([&live]) {
        assert_eq!(next_event(&mut stream).await.as_ref(), Some(expected));
    }

    // Resuming from the latest event: nothing to replay, only live events.
    let mut caught_up = fx.progress.subscribe(&id, Some(live.id)).await.unwrap();
    let next = fx.progress.update(&id, say("next")).await.unwrap();
    assert_eq!(next_event(&mut caught_up).await, Some(next.clone()));
    assert_eq!(next_event(&mut stream).await, Some(next));
}

/// Resuming from an event whose successors were trimmed starts with a `snapshot`, so the
/// subscriber never silently misses state; IDs in the stream still increase and live events
/// follow.
pub async fn subscribe_after_trimmed_events_starts_with_a_snapshot(factory: Factory) {
    let fx = factory(StoreLimits {
        max_events_per_operation: 3,
        ..StoreLimits::default()
    })
    .await;
    let id = op_id("prog-gap");
    let start = fx.progress.start(spec("prog-gap", &[1])).await.unwrap();
    let events = post_messages(&fx, &id, 6).await;
    let current = events.last().unwrap().clone();

    let mut stream = fx.progress.subscribe(&id, Some(start.id)).await.unwrap();
    let live = fx.progress.update(&id, say("live")).await.unwrap();

    let first = next_event(&mut stream).await.unwrap();
    assert_eq!(
        first.kind,
        EventKind::Snapshot,
        "a gap starts with a snapshot"
    );
    assert!(first.id > start.id);
    let mut last = first;
    loop {
        let event = next_event(&mut stream).await.unwrap();
        assert!(event.id > last.id, "{} > {}", event.id, last.id);
        if event.id == live.id {
            assert_eq!(event, live);
            assert_eq!(
                last.operation, current.operation,
                "the state just before the live event is the latest one"
            );
            break;
        }
        last = event;
    }
}

/// A subscriber that reads only after many events were posted still gets every one of them,
/// in order, exactly once.
pub async fn slow_subscriber_misses_nothing(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let id = op_id("prog-slow");
    fx.progress.start(spec("prog-slow", &[1])).await.unwrap();
    let mut stream = fx.progress.subscribe(&id, None).await.unwrap();
    let events = post_messages(&fx, &id, 150).await;
    let snapshot = next_event(&mut stream).await.unwrap();
    assert_eq!(snapshot.kind, EventKind::Snapshot);
    for expected in &events {
        assert_eq!(next_event(&mut stream).await.as_ref(), Some(expected));
    }
    // Then, awaited while it is being posted, the next live event: nothing is delivered twice
    // before it.
    let (next, live) = futures::join!(
        next_event(&mut stream),
        fx.progress.update(&id, say("live"))
    );
    assert_eq!(next, Some(live.unwrap()));
}

/// `succeeded`, `failed` and `cancelled` end the operation with an `end` event and refuse
/// every further update with `Conflict`; `succeeded` completes every step.
pub async fn terminal_states_refuse_updates(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    for (name, state) in [
        ("prog-succeeded", OperationState::Succeeded),
        ("prog-failed", OperationState::Failed),
        ("prog-cancelled", OperationState::Cancelled),
    ] {
        let id = op_id(name);
        fx.progress.start(spec(name, &[1, 3])).await.unwrap();
        fx.progress.update(&id, at_step(0, None)).await.unwrap();
        let end = fx.progress.update(&id, finish(state)).await.unwrap();
        assert_eq!(end.kind, EventKind::End, "{name}");
        assert_eq!(end.operation.state, state);
        if state == OperationState::Succeeded {
            assert_eq!(end.operation.percent, 100.0);
            assert!(end.operation.steps.iter().all(|s| s.fraction == 1.0));
        } else {
            assert_eq!(end.operation.percent, 25.0, "{name} keeps its progress");
        }
        assert_kind(
            fx.progress.update(&id, say("too late")).await,
            "conflict",
            name,
        );
        assert_kind(
            fx.progress
                .update(&id, finish(OperationState::Running))
                .await,
            "conflict",
            name,
        );
        assert_eq!(fx.progress.get(&id).await.unwrap(), Some(end.operation));
        let log = fx.progress.events_after(&id, None, 100).await.unwrap();
        assert_eq!(log.len(), 3, "{name}: refused updates leave no event");
    }
}

/// A stream ends right after the `end` event; subscribing to a finished operation yields its
/// terminal snapshot and ends; resuming after the `end` event ends at once.
pub async fn stream_ends_after_the_end_event(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let id = op_id("prog-end");
    fx.progress.start(spec("prog-end", &[1])).await.unwrap();
    let mut stream = fx.progress.subscribe(&id, None).await.unwrap();
    assert_eq!(
        next_event(&mut stream).await.unwrap().kind,
        EventKind::Snapshot
    );
    let end = fx
        .progress
        .update(&id, finish(OperationState::Succeeded))
        .await
        .unwrap();
    assert_eq!(next_event(&mut stream).await, Some(end.clone()));
    assert_eq!(next_event(&mut stream).await, None, "nothing after the end");

    let mut late = fx.progress.subscribe(&id, None).await.unwrap();
    let snapshot = next_event(&mut late).await.unwrap();
    assert_eq!(snapshot.kind, EventKind::Snapshot);
    assert_eq!(snapshot.id, end.id);
    assert_eq!(snapshot.operation, end.operation);
    assert_eq!(next_event(&mut late).await, None);

    let mut resumed = fx.progress.subscribe(&id, Some(end.id)).await.unwrap();
    assert_eq!(next_event(&mut resumed).await, None);
}

/// Starting an operation whose ID exists is a `Conflict` and leaves the first one untouched.
pub async fn duplicate_id_conflicts(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let id = op_id("prog-dup");
    let first = fx.progress.start(spec("prog-dup", &[1])).await.unwrap();
    assert_kind(
        fx.progress.start(spec("prog-dup", &[1, 2, 3])).await,
        "conflict",
        "second start",
    );
    assert_eq!(fx.progress.get(&id).await.unwrap(), Some(first.operation));
}

/// Unknown operations: `get` is `None`; `update`, `events_after` and `subscribe` are
/// `NotFound`.
pub async fn unknown_operation_is_not_found(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let id = op_id("prog-nobody");
    assert_eq!(fx.progress.get(&id).await.unwrap(), None);
    assert_kind(
        fx.progress.update(&id, say("hi")).await,
        "not_found",
        "update",
    );
    assert_kind(
        fx.progress.events_after(&id, None, 10).await,
        "not_found",
        "events_after",
    );
    let subscribed = fx.progress.subscribe(&id, None).await.map(|_| ());
    assert_kind(subscribed, "not_found", "subscribe");
    // Nothing was created as a side effect.
    assert_eq!(fx.progress.get(&id).await.unwrap(), None);
}

/// Malformed updates are `Invalid` and change nothing: a fraction outside `0..=1` (or NaN),
/// an unknown step, a fraction without a step, an oversized message, an empty update.
pub async fn invalid_updates_are_refused_and_change_nothing(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let id = op_id("prog-invalid");
    fx.progress
        .start(spec("prog-invalid", &[1, 1]))
        .await
        .unwrap();
    let before = fx
        .progress
        .update(&id, at_step(0, Some(0.5)))
        .await
        .unwrap();
    let bad = [
        ("fraction above 1", at_step(1, Some(1.5))),
        ("negative fraction", at_step(1, Some(-0.1))),
        ("NaN fraction", at_step(1, Some(f64::NAN))),
        ("step index outside the plan", at_step(2, None)),
        (
            "unknown step name",
            ProgressUpdate {
                step: Some(StepRef::Name(StepName::parse("nope").unwrap())),
                ..ProgressUpdate::default()
            },
        ),
        (
            "fraction without a step",
            ProgressUpdate {
                fraction: Some(0.5),
                ..ProgressUpdate::default()
            },
        ),
        ("oversized message", say(&"x".repeat(MAX_MESSAGE_BYTES + 1))),
        ("empty update", ProgressUpdate::default()),
    ];
    for (what, update) in bad {
        assert_kind(fx.progress.update(&id, update).await, "invalid", what);
    }
    assert_eq!(
        fx.progress.get(&id).await.unwrap().as_ref(),
        Some(&before.operation)
    );
    let log = fx.progress.events_after(&id, None, 100).await.unwrap();
    assert_eq!(log.last(), Some(&before), "no event was written");
    assert_eq!(log.len(), 2);
}

/// Bad plans are `Invalid` and create nothing: no steps, a zero or oversized weight, a
/// duplicate step name, an oversized message.
pub async fn invalid_plans_are_refused(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let mut duplicate = spec("prog-badplan", &[1, 1]);
    duplicate.steps[1].name = step_name(0);
    let mut long_message = spec("prog-badplan", &[1]);
    long_message.message = Some("x".repeat(MAX_MESSAGE_BYTES + 1));
    let bad = [
        ("no steps", spec("prog-badplan", &[])),
        ("zero weight", spec("prog-badplan", &[1, 0])),
        (
            "weight over the maximum",
            spec("prog-badplan", &[Operation::MAX_WEIGHT + 1]),
        ),
        ("duplicate step", duplicate),
        ("oversized message", long_message),
    ];
    for (what, s) in bad {
        assert_kind(fx.progress.start(s).await, "invalid", what);
    }
    assert_eq!(fx.progress.get(&op_id("prog-badplan")).await.unwrap(), None);
}

/// Each operation keeps only its newest `max_events_per_operation` events.
pub async fn event_cap_trims_the_oldest(factory: Factory) {
    let fx = factory(StoreLimits {
        max_events_per_operation: 5,
        ..StoreLimits::default()
    })
    .await;
    let id = op_id("prog-cap");
    fx.progress.start(spec("prog-cap", &[1])).await.unwrap();
    let events = post_messages(&fx, &id, 10).await;
    let log = fx.progress.events_after(&id, None, 100).await.unwrap();
    assert_eq!(log, events[5..].to_vec(), "the newest five, newest last");
    // Asking from a trimmed event returns what is retained after it.
    let after = fx
        .progress
        .events_after(&id, Some(events[1].id), 100)
        .await
        .unwrap();
    assert_eq!(after, events[5..].to_vec());
    // The snapshot is unaffected by trimming.
    assert_eq!(
        fx.progress.get(&id).await.unwrap(),
        Some(events[9].operation.clone())
    );
}

/// The correlation ID given at start is carried by the snapshot and every event.
pub async fn correlation_id_is_preserved(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let id = op_id("prog-corr");
    let correlation = CorrelationId::parse("req-7f3a:checkout.42").unwrap();
    let mut s = spec("prog-corr", &[1, 1]);
    s.correlation_id = Some(correlation.clone());
    let start = fx.progress.start(s).await.unwrap();
    assert_eq!(start.operation.correlation_id.as_ref(), Some(&correlation));
    fx.progress.update(&id, at_step(0, None)).await.unwrap();
    let end = fx
        .progress
        .update(&id, finish(OperationState::Failed))
        .await
        .unwrap();
    assert_eq!(end.operation.correlation_id.as_ref(), Some(&correlation));
    let got = fx.progress.get(&id).await.unwrap().unwrap();
    assert_eq!(got.correlation_id, Some(correlation.clone()));
    let log = fx.progress.events_after(&id, None, 100).await.unwrap();
    assert_eq!(log.len(), 3);
    assert!(log
        .iter()
        .all(|e| e.operation.correlation_id.as_ref() == Some(&correlation)));
    let mut stream = fx.progress.subscribe(&id, None).await.unwrap();
    let snapshot = next_event(&mut stream).await.unwrap();
    assert_eq!(snapshot.operation.correlation_id, Some(correlation));

    // Without one, there is none.
    let plain = fx.progress.start(spec("prog-nocorr", &[1])).await.unwrap();
    assert_eq!(plain.operation.correlation_id, None);
}

/// An operation and its events vanish `operation_ttl` after the last update, not after the
/// start.
pub async fn operations_expire_after_their_last_update(factory: Factory) {
    let fx = factory(StoreLimits {
        operation_ttl: Duration::from_millis(1000),
        ..StoreLimits::default()
    })
    .await;
    let id = op_id("prog-ttl");
    fx.progress.start(spec("prog-ttl", &[1])).await.unwrap();
    fx.clock.advance(Duration::from_millis(600)).await;
    let update = fx.progress.update(&id, say("refreshed")).await.unwrap();
    fx.clock.advance(Duration::from_millis(600)).await;
    // Past the start's TTL but within the update's.
    assert_eq!(
        fx.progress.get(&id).await.unwrap(),
        Some(update.operation),
        "the update extended the lifetime"
    );
    assert_eq!(
        fx.progress.events_after(&id, None, 10).await.unwrap().len(),
        2
    );
    fx.clock.advance(Duration::from_millis(1100)).await;
    assert_eq!(fx.progress.get(&id).await.unwrap(), None, "expired");
    assert_kind(
        fx.progress.update(&id, say("late")).await,
        "not_found",
        "update after expiry",
    );
    assert_kind(
        fx.progress.events_after(&id, None, 10).await,
        "not_found",
        "events after expiry",
    );
    // The ID is free again.
    let again = fx.progress.start(spec("prog-ttl", &[1])).await.unwrap();
    assert_eq!(again.operation.message, None);
}
