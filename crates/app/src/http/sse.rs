//! `GET /v1/operations/{id}/events`: progress as Server-Sent Events.
//!
//! ```text
//! id: 1764064800000-0
//! event: snapshot
//! data: {"id":"op-1","state":"running","percent":0.0,...}
//!
//! id: 1764064800123-0
//! event: progress
//! data: {...}
//!
//! : keep-alive
//!
//! id: 1764064800456-0
//! event: end
//! data: {...,"state":"succeeded"}
//! ```
//!
//! Every event has an `id:`; a client that reconnects with `Last-Event-ID` (or
//! `?last_event_id=`) gets exactly the events after it (or, when those were trimmed, a fresh
//! snapshot first). The stream ends after the terminal (`end`) event, when the operation
//! expires, or when the server shuts down. Open streams are capped per client IP (429) and in
//! total (503).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures::Stream;
use parking_lot::Mutex;
use serde::Deserialize;
use spool_domain::names::OperationId;
use spool_domain::progress::{EventId, EventKind, ProgressEvent};
use spool_ports::EventStream;

use super::dto::OperationDto;
use super::extract::{ApiPath, ApiQuery};
use super::middleware::ClientIp;
use super::{ApiError, AppState};
use crate::telemetry::Metrics;

/// `Last-Event-ID`.
pub static LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

struct Inner {
    max_total: usize,
    max_per_ip: usize,
    counts: Mutex<Counts>,
    metrics: Metrics,
}

/// The open-stream caps. Cheap to clone.
#[derive(Clone)]
pub struct SseStreams {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SseStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseStreams")
            .field("max_total", &self.inner.max_total)
            .field("max_per_ip", &self.inner.max_per_ip)
            .field("open", &self.open())
            .finish()
    }
}

impl SseStreams {
    /// At most `max_total` streams, and `max_per_ip` per client IP.
    pub fn new(max_total: usize, max_per_ip: usize, metrics: Metrics) -> Self {
        Self {
            inner: Arc::new(Inner {
                max_total,
                max_per_ip,
                counts: Mutex::new(Counts::default()),
                metrics,
            }),
        }
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.inner.counts.lock().total
    }

    /// Takes a slot for a stream from `ip`: 429 `too_many_streams` over the per-IP cap, 503
    /// over the total. The slot is freed when the [`StreamSlot`] drops.
    ///
    /// # Errors
    /// As above.
    pub fn acquire(&self, ip: Option<IpAddr>) -> Result<StreamSlot, ApiError> {
        let mut c = self.inner.counts.lock();
        if let Some(ip) = ip {
            if c.per_ip.get(&ip).copied().unwrap_or(0) >= self.inner.max_per_ip {
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_streams",
                    format!(
                        "at most {} event streams may be open per client",
                        self.inner.max_per_ip
                    ),
                )
                .with_header(header::RETRY_AFTER, HeaderValue::from_static("1")));
            }
        }
        if c.total >= self.inner.max_total {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_streams",
                "the server has as many event streams open as it allows; retry later",
            )
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("1")));
        }
        c.total += 1;
        if let Some(ip) = ip {
            *c.per_ip.entry(ip).or_insert(0) += 1;
        }
        drop(c);
        self.inner.metrics.sse_streams_changed(1);
        Ok(StreamSlot {
            streams: self.clone(),
            ip,
        })
    }

    fn release(&self, ip: Option<IpAddr>) {
        let mut c = self.inner.counts.lock();
        c.total = c.total.saturating_sub(1);
        if let Some(ip) = ip {
            if let Some(n) = c.per_ip.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    c.per_ip.remove(&ip);
                }
            }
        }
        drop(c);
        self.inner.metrics.sse_streams_changed(-1);
    }
}

/// One open stream's place under the caps; freed on drop.
#[derive(Debug)]
pub struct StreamSlot {
    streams: SseStreams,
    ip: Option<IpAddr>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.streams.release(self.ip);
    }
}

fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Snapshot => "snapshot",
        EventKind::Progress => "progress",
        EventKind::End => "end",
    }
}

/// One progress event as an SSE event: `id`, `event` and the operation as `data`.
pub fn to_sse_event(e: &ProgressEvent) -> Result<Event, ApiError> {
    let data =
        serde_json::to_string(&OperationDto::from(&e.operation)).map_err(ApiError::internal)?;
    Ok(Event::default()
        .id(e.id.to_string())
        .event(kind_name(e.kind))
        .data(data))
}

type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The port's event stream, ended after the terminal event, on an error, or at shutdown;
/// its slot is freed the moment it ends (before the response body closes).
struct Events {
    inner: EventStream,
    slot: Option<StreamSlot>,
    shutdown: Shutdown,
    done: bool,
}

impl Events {
    fn finish(&mut self) -> Poll<Option<Result<Event, Infallible>>> {
        self.done = true;
        self.slot = None;
        Poll::Ready(None)
    }
}

impl Stream for Events {
    type Item = Result<Event, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return self.finish();
        }
        if self.shutdown.as_mut().poll(cx).is_ready() {
            return self.finish();
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(e))) => {
                if e.kind == EventKind::End {
                    self.done = true;
                }
                match to_sse_event(&e) {
                    Ok(ev) => Poll::Ready(Some(Ok(ev))),
                    Err(err) => {
                        tracing::error!(error = %err, "cannot encode a progress event");
                        self.finish()
                    }
                }
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::info!(error = %e, "progress stream ended by the backend");
                self.finish()
            }
            Poll::Ready(None) => self.finish(),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Query of the events endpoint.
#[derive(Debug, Default, Deserialize)]
pub struct EventsQuery {
    /// Resume point, for clients that cannot set `Last-Event-ID`.
    pub last_event_id: Option<String>,
}

fn resume_point(headers: &HeaderMap, query: &EventsQuery) -> Result<Option<EventId>, ApiError> {
    let raw = match headers.get(&LAST_EVENT_ID) {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::invalid("Last-Event-ID is not ASCII"))?
                .trim()
                .to_owned(),
        ),
        None => query.last_event_id.clone(),
    };
    match raw {
        Some(s) if !s.is_empty() => Ok(Some(EventId::parse(&s)?)),
        _ => Ok(None),
    }
}

/// `GET /v1/operations/{id}/events`.
pub(crate) async fn events(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<EventsQuery>,
    ip: Option<Extension<ClientIp>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = OperationId::parse(id)?;
    let after = resume_point(&headers, &query)?;
    let slot = state.sse().acquire(ip.map(|Extension(ClientIp(ip))| ip))?;
    let inner = state.spool().progress().subscribe(&id, after).await?;
    let token = state.shutdown_token();
    let stream = Events {
        inner,
        slot: Some(slot),
        shutdown: Box::pin(async move { token.cancelled().await }),
        done: false,
    };
    let mut res = Sse::new(stream)
        .keep_alive(
            KeepAlive::new()
                .interval(state.options().sse_keep_alive)
                .text("keep-alive"),
        )
        .into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res.headers_mut().insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    Ok(res)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn caps_per_ip_then_in_total_and_slots_free_on_drop() {
        let s = SseStreams::new(3, 2, Metrics::new());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = s.acquire(Some(a)).unwrap();
        let _a2 = s.acquire(Some(a)).unwrap();
        assert_eq!(s.acquire(Some(a)).unwrap_err().status(), 429);
        let _b1 = s.acquire(Some(b)).unwrap();
        assert_eq!(s.acquire(Some(b)).unwrap_err().status(), 503);
        assert_eq!(s.open(), 3);
        drop(a1);
        assert_eq!(s.open(), 2);
        let _a3 = s.acquire(Some(a)).unwrap();
        assert_eq!(s.acquire(None).unwrap_err().status(), 503);
    }

    #[test]
    fn resume_points_come_from_the_header_first() {
        let mut h = HeaderMap::new();
        let q = EventsQuery {
            last_event_id: Some("5-1".into()),
        };
        assert_eq!(
            resume_point(&h, &q).unwrap(),
            Some(EventId { ms: 5, seq: 1 })
        );
        h.insert(LAST_EVENT_ID.clone(), HeaderValue::from_static("7-0"));
        assert_eq!(
            resume_point(&h, &q).unwrap(),
            Some(EventId { ms: 7, seq: 0 })
        );
        h.insert(LAST_EVENT_ID.clone(), HeaderValue::from_static("nope"));
        assert_eq!(resume_point(&h, &q).unwrap_err().status(), 400);
        assert_eq!(
            resume_point(&HeaderMap::new(), &EventsQuery::default()).unwrap(),
            None
        );
    }
}
