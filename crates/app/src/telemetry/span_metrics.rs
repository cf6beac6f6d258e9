//! A `tracing` layer that turns every service span (`cache.get`, `queue.enqueue`, ...) into
//! an observation of `spool_operation_duration_seconds`.

use std::time::Instant;

use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use super::{Metrics, Outcome};

/// Records the lifetime of each span named `<service>.<operation>` whose target is under
/// `spool_app::services` into [`Metrics::record_operation`].
///
/// A span ends when its instrumented future completes, so the duration is the operation's
/// wall time. The outcome is `error` when an `ERROR`-level event was recorded inside the
/// span, `ok` otherwise.
#[derive(Debug, Clone)]
pub struct OperationMetricsLayer {
    metrics: Metrics,
    target_prefix: &'static str,
}

struct Started {
    at: Instant,
    failed: bool,
}

impl OperationMetricsLayer {
    /// A layer recording into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self {
            metrics,
            target_prefix: "spool_app::services",
        }
    }

    fn wanted(&self, target: &str, name: &str) -> bool {
        target.starts_with(self.target_prefix) && name.split_once('.').is_some()
    }
}

impl<S> Layer<S> for OperationMetricsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let meta = attrs.metadata();
        if !self.wanted(meta.target(), meta.name()) {
            return;
        }
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Started {
                at: Instant::now(),
                failed: false,
            });
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        if *event.metadata().level() != tracing::Level::ERROR {
            return;
        }
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                if let Some(started) = span.extensions_mut().get_mut::<Started>() {
                    started.failed = true;
                    break;
                }
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let Some(started) = span.extensions_mut().remove::<Started>() else {
            return;
        };
        let Some((service, operation)) = span.name().split_once('.') else {
            return;
        };
        let outcome = if started.failed {
            Outcome::Error
        } else {
            Outcome::Ok
        };
        self.metrics
            .record_operation(service, operation, outcome, started.at.elapsed());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn service_spans_become_duration_observations() {
        let metrics = Metrics::new();
        let subscriber =
            tracing_subscriber::registry().with(OperationMetricsLayer::new(metrics.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(target: "spool_app::services::cache", "cache.get");
            drop(span.enter());
            drop(span);
            let failing = tracing::info_span!(target: "spool_app::services::queue", "queue.fail");
            failing.in_scope(|| tracing::error!("boom"));
            drop(failing);
            // Not a service span: ignored.
            drop(tracing::info_span!(target: "other", "x.y"));
        });
        let text = metrics.render().unwrap();
        assert!(
            text.contains(
                r#"spool_operation_duration_seconds_count{operation="get",outcome="ok",service="cache"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"spool_operation_duration_seconds_count{operation="fail",outcome="error",service="queue"} 1"#
            ),
            "{text}"
        );
        assert!(!text.contains(r#"service="x""#), "{text}");
    }
}
