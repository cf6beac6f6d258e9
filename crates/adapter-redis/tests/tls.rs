//! TLS: a `redis-server` with a CA and certificate generated here (rcgen); the adapter
//! connects over `rediss://` trusting that CA, a client trusting another CA is refused, and a
//! plaintext client gets nothing from the TLS port.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use rcgen::{BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair};
use spool_adapter_redis::testing::{self, RedisServer};
use spool_adapter_redis::{RedisBackend, RedisConfig};
use spool_domain::names::{CacheKey, ProjectId, QueueName, ScopedKey, TaskKind};
use spool_domain::task::TaskSpec;
use spool_ports::{CacheStore, Health, QueueStore, ReserveOptions};

struct Ca {
    cert: Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    Ca {
        cert: params.self_signed(&key).unwrap(),
        key,
    }
}

/// Writes `ca.pem`, `server.pem`, `server.key` into `dir` for a server named localhost.
fn write_certs(dir: &Path, ca: &Ca) {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.cert.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_custom_ca_works_and_plaintext_is_refused() {
    let certs = tempfile::tempdir().unwrap();
    let test_ca = ca("spool test CA");
    write_certs(certs.path(), &test_ca);
    let p = |f: &str| certs.path().join(f).to_string_lossy().into_owned();
    let tls_port = free_port().to_string();
    let (cert, key, ca_file) = (p("server.pem"), p("server.key"), p("ca.pem"));
    let server = RedisServer::spawn_with(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca_file,
        "--tls-auth-clients",
        "no",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let _keep = &server;

    // The adapter over TLS, trusting the test CA: a smoke test of two ports.
    let mut config = RedisConfig::new(format!("rediss://localhost:{tls_port}"))
        .prefix(testing::unique_prefix())
        .tls_ca_file(certs.path().join("ca.pem"));
    config.pool_size = 1;
    let backend = RedisBackend::connect(config).await.unwrap();
    let cache = backend.cache();
    let k = ScopedKey::new(
        ProjectId::parse("tls").unwrap(),
        CacheKey::parse("k").unwrap(),
    );
    cache
        .set(
            &k,
            Bytes::from_static(b"secret bytes"),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(
        cache.get(&k).await.unwrap(),
        Some(Bytes::from_static(b"secret bytes"))
    );
    let q = QueueName::parse("tls").unwrap();
    let queue = backend.queue();
    let created = queue
        .enqueue(
            &q,
            TaskSpec::new(TaskKind::parse("t").unwrap(), serde_json::json!(1)),
        )
        .await
        .unwrap();
    let lease = queue
        .reserve(
            std::slice::from_ref(&q),
            ReserveOptions::new(Duration::from_secs(10)),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lease.task.id, created.task().id);
    assert!(backend.health().check().await.unwrap().version.is_some());

    // A client that trusts another CA refuses the server's certificate.
    let other = tempfile::tempdir().unwrap();
    write_certs(other.path(), &ca("some other CA"));
    let mut distrust = RedisConfig::new(format!("rediss://localhost:{tls_port}"))
        .tls_ca_file(other.path().join("ca.pem"));
    distrust.connect_timeout = Duration::from_secs(2);
    distrust.reconnect.max_attempts = 1;
    let refused = RedisBackend::connect(distrust).await.unwrap_err();
    assert!(
        matches!(refused, spool_ports::PortError::Configuration { .. }),
        "{refused:?}"
    );

    // A plaintext client gets no answer from the TLS port.
    let mut plain = TcpStream::connect(("127.0.0.1", tls_port.parse::<u16>().unwrap())).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    plain.write_all(b"PING\r\n").unwrap();
    let mut buf = [0u8; 64];
    let answered = matches!(plain.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"));
    assert!(!answered, "the TLS port answered a plaintext PING");
    // And the independent client sees the same.
    let plain_client = redis::Client::open(format!("redis://127.0.0.1:{tls_port}")).unwrap();
    let ping = plain_client
        .get_connection_with_timeout(Duration::from_secs(2))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
    assert!(ping.is_err(), "plaintext PING succeeded: {ping:?}");
}
