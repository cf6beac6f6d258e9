//! The `spool` binary, run as a process.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;

use support::{get, serve, spool, terminate};

#[test]
fn version_and_help() {
    let out = spool().arg("--version").output().expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.trim(), format!("spool {}", env!("CARGO_PKG_VERSION")));
    let out = spool().arg("--help").output().expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["serve", "worker", "bench"] {
        assert!(text.contains(cmd), "{text}");
    }
}

#[test]
fn serve_refuses_a_public_address_without_api_keys() {
    let out = spool()
        .arg("serve")
        .env("SPOOL_HTTP_ADDR", "0.0.0.0:0")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to listen on 0.0.0.0:0"), "{err}");
    assert!(err.contains("api_keys"), "{err}");
}

#[test]
fn bad_settings_are_named() {
    let out = spool()
        .arg("serve")
        .env("SPOOL_BACKEND", "cassandra")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("backend"), "{err}");
}

#[cfg(unix)]
#[test]
fn serve_answers_and_stops_gracefully_on_sigterm() {
    let mut served = serve(&[]);
    let live = get(&served.addr, "/health/live");
    assert!(live.starts_with("HTTP/1.1 200"), "{live}");
    assert!(
        live.to_ascii_lowercase().contains("x-correlation-id:"),
        "{live}"
    );
    let (exit, rest) = served.terminate();
    assert!(exit.success(), "{exit:?}");
    assert!(
        rest.iter().any(|l| l.contains("spool serve stopped")),
        "{rest:?}"
    );
}

#[cfg(unix)]
#[test]
fn worker_runs_until_sigterm_then_drains() {
    let mut child = spool()
        .arg("worker")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    loop {
        let line = lines
            .next()
            .expect("the worker logs that it runs")
            .expect("readable log");
        if line.contains("spool worker running the example handlers") {
            break;
        }
    }
    terminate(&mut child);
    let exit = child.wait().expect("exits");
    assert!(exit.success(), "{exit:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.contains("spool worker stopped")),
        "{rest:?}"
    );
}

/// What a fake OTLP/HTTP collector received: (path, content type, body) per request.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, String, Vec<u8>)>>>;

/// A minimal OTLP/HTTP collector on loopback: records every request and answers 200. Each
/// connection is served on its own thread (the exporter's client keeps connections alive).
fn fake_collector() -> (String, Received) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let addr = listener.local_addr().expect("address").to_string();
    let received: Received = Received::default();
    let sink = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let sink = sink.clone();
            std::thread::spawn(move || serve_otlp(stream, &sink));
        }
    });
    (addr, received)
}

fn serve_otlp(stream: TcpStream, sink: &Received) {
    let mut writer = stream.try_clone().expect("clones");
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let (mut length, mut content_type) = (0usize, String::new());
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "content-type" => content_type = value.trim().to_owned(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        sink.lock()
            .expect("not poisoned")
            .push((path, content_type, body));
        if writer
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

#[cfg(unix)]
#[test]
fn serve_exports_traces_and_metrics_over_otlp() {
    let (collector, received) = fake_collector();
    let endpoint = format!("http://{collector}");
    let mut served = serve(&[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())]);
    let queues = get(&served.addr, "/v1/queues");
    assert!(queues.starts_with("HTTP/1.1 200"), "{queues}");
    // A graceful stop flushes the last batches of spans and metrics.
    let (exit, _) = served.terminate();
    assert!(exit.success(), "{exit:?}");

    let got = received.lock().expect("not poisoned").clone();
    let find = |path: &str| {
        got.iter()
            .find(|(p, _, _)| p == path)
            .unwrap_or_else(|| {
                let paths: Vec<&String> = got.iter().map(|(p, _, _)| p).collect();
                panic!("no POST {path} reached the collector; got {paths:?}")
            })
            .clone()
    };
    let contains =
        |body: &[u8], needle: &str| body.windows(needle.len()).any(|w| w == needle.as_bytes());
    let (_, traces_type, traces) = find("/v1/traces");
    assert_eq!(traces_type, "application/x-protobuf");
    assert!(
        contains(&traces, "spool"),
        "service.name missing from the spans"
    );
    assert!(
        contains(&traces, "queue.stats"),
        "no span of the queue.stats operation"
    );
    let (_, metrics_type, metrics) = find("/v1/metrics");
    assert_eq!(metrics_type, "application/x-protobuf");
    assert!(
        contains(&metrics, "spool.operation.duration"),
        "no operation histogram"
    );
}
