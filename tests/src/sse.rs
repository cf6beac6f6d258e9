//! A `text/event-stream` reader over a real streaming HTTP response, parsed by hand per the
//! HTML Living Standard's event-stream rules (fields `id`, `event`, `data`; `:` comments;
//! a blank line dispatches).

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};

/// Longest the reader waits for the next bytes before it fails the test (a guard against a
/// hung stream, not a timing assertion).
const GUARD: Duration = Duration::from_secs(30);

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `id:` field.
    pub id: Option<String>,
    /// The `event:` field (`message` when absent).
    pub event: String,
    /// The `data:` lines, joined by `\n`.
    pub data: String,
}

impl SseEvent {
    /// `data` parsed as JSON.
    ///
    /// # Panics
    /// When it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {:?}", self.data))
    }
}

/// An event or a comment line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseFrame {
    /// A dispatched event.
    Event(SseEvent),
    /// A `:` comment (keep-alives), without the colon.
    Comment(String),
}

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<Vec<u8>>> + Send>>;

/// Reads frames from a streaming response.
pub struct SseReader {
    body: Body,
    buf: Vec<u8>,
    ready: VecDeque<SseFrame>,
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
    eof: bool,
}

impl std::fmt::Debug for SseReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseReader")
            .field("buffered", &self.buf.len())
            .field("eof", &self.eof)
            .finish_non_exhaustive()
    }
}

impl SseReader {
    /// A reader of `res`'s body.
    pub fn new(res: reqwest::Response) -> Self {
        Self {
            body: Box::pin(res.bytes_stream().map(|r| r.map(|b| b.to_vec()))),
            buf: Vec::new(),
            ready: VecDeque::new(),
            id: None,
            event: None,
            data: None,
            eof: false,
        }
    }

    fn line(&mut self, line: &str) {
        if line.is_empty() {
            if let Some(mut data) = self.data.take() {
                if data.ends_with('\n') {
                    data.pop();
                }
                self.ready.push_back(SseFrame::Event(SseEvent {
                    id: self.id.take(),
                    event: self.event.take().unwrap_or_else(|| "message".to_owned()),
                    data,
                }));
            } else {
                self.id = None;
                self.event = None;
            }
            return;
        }
        if let Some(comment) = line.strip_prefix(':') {
            self.ready
                .push_back(SseFrame::Comment(comment.trim_start().to_owned()));
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "id" => self.id = Some(value.to_owned()),
            "event" => self.event = Some(value.to_owned()),
            "data" => {
                let d = self.data.get_or_insert_with(String::new);
                d.push_str(value);
                d.push('\n');
            }
            _ => {}
        }
    }

    fn drain_lines(&mut self) {
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let text =
                String::from_utf8(line).unwrap_or_else(|e| panic!("SSE stream is not UTF-8: {e}"));
            self.line(&text);
        }
    }

    /// The next frame; `None` once the server ended the stream.
    ///
    /// # Panics
    /// On a transport error, or when nothing arrives within a generous guard time.
    pub async fn next_frame(&mut self) -> Option<SseFrame> {
        loop {
            if let Some(f) = self.ready.pop_front() {
                return Some(f);
            }
            if self.eof {
                return None;
            }
            match tokio::time::timeout(GUARD, self.body.next()).await {
                Err(_) => panic!("no SSE bytes within {GUARD:?}"),
                Ok(None) => {
                    self.eof = true;
                    // A final event without its blank line is not dispatched (per spec).
                }
                Ok(Some(Err(e))) => panic!("SSE transport error: {e}"),
                Ok(Some(Ok(chunk))) => {
                    self.buf.extend_from_slice(&chunk);
                    self.drain_lines();
                }
            }
        }
    }

    /// The next event, skipping comments; `None` at the end of the stream.
    pub async fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            match self.next_frame().await? {
                SseFrame::Event(e) => return Some(e),
                SseFrame::Comment(_) => continue,
            }
        }
    }

    /// Every remaining event, until the server ends the stream.
    pub async fn rest(mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        while let Some(e) = self.next_event().await {
            out.push(e);
        }
        out
    }
}
