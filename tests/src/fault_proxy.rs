//! [`FaultProxy`]: a small TCP proxy on `127.0.0.1:0` that sits between a client (spool's
//! Redis adapter) and a server (a test `redis-server`) and injects network faults on demand.
//!
//! | [`Fault`] | existing connections | new connections |
//! |---|---|---|
//! | `Pass` | bytes flow both ways | accepted and forwarded |
//! | `Latency(d)` | every chunk the client sends is held `d` before it is forwarded (so each request/reply round trip takes at least `d` more); replies are not delayed | as existing |
//! | `BlackHole` | nothing is read or forwarded any more (the peers see silence, not an error); bytes sent meanwhile wait in the socket buffers and flow once the fault ends, as after a healed partition | accepted, but the upstream is not even dialled until the fault ends |
//! | `Cut` | closed cleanly (FIN to both peers) | accepted, then closed at once |
//! | `Reset` | aborted (RST to both peers: `SO_LINGER` 0) | accepted, then reset at once |
//!
//! The fault can be changed at any time with [`FaultProxy::set`]; every connection reacts at
//! once (a connection held by a `Latency` delay reacts after that chunk). Everything stops
//! when the proxy is dropped: the accept loop is aborted and every connection task sees the
//! fault channel close and ends by itself.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use spool_tests::fault_proxy::{Fault, FaultProxy};
//! let proxy = FaultProxy::start("127.0.0.1:6379".parse().unwrap()).await?;
//! let url = proxy.url_for("redis://127.0.0.1:6379"); // redis://127.0.0.1:<proxy port>
//! proxy.set(Fault::BlackHole);
//! # let _ = url; Ok(()) }
//! ```

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does to the traffic (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything.
    Pass,
    /// Hold every client-to-server chunk this long before forwarding it.
    Latency(Duration),
    /// Accept, never forward.
    BlackHole,
    /// Close every connection cleanly.
    Cut,
    /// Abort every connection with a TCP reset.
    Reset,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    forwarded_bytes: AtomicU64,
}

/// A fault-injecting TCP proxy to one upstream address; see the [module docs](self).
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    fault: watch::Sender<Fault>,
    counters: Arc<Counters>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream`, starting in [`Fault::Pass`].
    ///
    /// # Errors
    /// When no loopback port can be bound.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (fault, rx) = watch::channel(Fault::Pass);
        let counters = Arc::new(Counters::default());
        let accept = tokio::spawn(accept_loop(listener, upstream, rx, Arc::clone(&counters)));
        Ok(Self {
            addr,
            upstream,
            fault,
            counters,
            accept,
        })
    }

    /// Where clients connect: `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the proxy forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// `url` (`redis://[user:pass@]host:port[/db]`) with its `host:port` replaced by the
    /// proxy's address; anything else in the URL is kept.
    pub fn url_for(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let userinfo = authority
            .rsplit_once('@')
            .map(|(u, _)| format!("{u}@"))
            .unwrap_or_default();
        format!("{scheme}://{userinfo}{}{tail}", self.addr)
    }

    /// Switches the fault; every connection reacts at once.
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// The current fault.
    pub fn fault(&self) -> Fault {
        *self.fault.borrow()
    }

    /// Connections accepted so far.
    pub fn connections_accepted(&self) -> u64 {
        self.counters.accepted.load(Ordering::Relaxed)
    }

    /// Bytes forwarded so far, both directions.
    pub fn forwarded_bytes(&self) -> u64 {
        self.counters.forwarded_bytes.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // The connection tasks end by themselves once `fault` (the sender) is gone.
        self.accept.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    rx: watch::Receiver<Fault>,
    counters: Arc<Counters>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of file descriptors or similar: back off briefly instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(serve(client, upstream, rx.clone(), Arc::clone(&counters)));
    }
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// A peer closed or failed: close the other side cleanly.
    Closed,
    /// `Fault::Cut` (or the proxy is gone).
    Cut,
    /// `Fault::Reset`.
    Reset,
}

/// Waits while the fault is a black hole; returns the fault that ended the wait, or `None`
/// when the proxy is gone.
async fn wait_out_black_hole(rx: &mut watch::Receiver<Fault>) -> Option<Fault> {
    loop {
        let fault = *rx.borrow_and_update();
        if fault != Fault::BlackHole {
            return Some(fault);
        }
        rx.changed().await.ok()?;
    }
}

async fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    mut rx: watch::Receiver<Fault>,
    counters: Arc<Counters>,
) {
    let end = match wait_out_black_hole(&mut rx).await {
        None | Some(Fault::Cut) => End::Cut,
        Some(Fault::Reset) => End::Reset,
        Some(Fault::Pass | Fault::Latency(_) | Fault::BlackHole) => {
            match TcpStream::connect(upstream).await {
                Ok(server) => {
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let end = pump(&client, &server, &mut rx, &counters).await;
                    finish(&server, end);
                    end
                }
                // The server is down: the client sees its connection reset, as it would
                // without the proxy.
                Err(_) => End::Reset,
            }
        }
    };
    finish(&client, end);
}

/// Applies the end to one socket before it is dropped.
fn finish(stream: &TcpStream, end: End) {
    if end == End::Reset {
        // Dropping a socket with a zero linger sends RST instead of FIN.
        let _ = stream.set_zero_linger();
    }
}

/// Forwards between the two sockets under the current fault until a peer closes or the
/// fault cuts or resets the connection.
async fn pump(
    client: &TcpStream,
    server: &TcpStream,
    rx: &mut watch::Receiver<Fault>,
    counters: &Counters,
) -> End {
    let mut from_client = vec![0u8; 16 * 1024];
    let mut from_server = vec![0u8; 16 * 1024];
    // Readiness-based reads and writes on `&TcpStream` leave both sockets with the caller,
    // so `finish` can still set the linger before they are dropped.
    loop {
        let fault = *rx.borrow_and_update();
        let delay = match fault {
            Fault::Cut => return End::Cut,
            Fault::Reset => return End::Reset,
            Fault::BlackHole => {
                if rx.changed().await.is_err() {
                    return End::Cut;
                }
                continue;
            }
            Fault::Pass => Duration::ZERO,
            Fault::Latency(d) => d,
        };
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return End::Cut;
                }
            }
            n = read_some(client, &mut from_client) => {
                let Some(n) = n else { return End::Closed };
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                // A fault set while the chunk was held applies to it too: cut or reset
                // drop it; a black hole delivers it once the hole ends (as TCP would
                // retransmit it after a healed partition).
                if matches!(*rx.borrow(), Fault::Cut | Fault::Reset | Fault::BlackHole) {
                    match wait_out_black_hole(rx).await {
                        None | Some(Fault::Cut) => return End::Cut,
                        Some(Fault::Reset) => return End::Reset,
                        Some(_) => {}
                    }
                }
                if write_all(server, &from_client[..n]).await.is_err() {
                    return End::Closed;
                }
                counters.forwarded_bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            n = read_some(server, &mut from_server) => {
                let Some(n) = n else { return End::Closed };
                if write_all(client, &from_server[..n]).await.is_err() {
                    return End::Closed;
                }
                counters.forwarded_bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
}

/// Reads what is available; `None` on EOF or error.
async fn read_some(stream: &TcpStream, buf: &mut [u8]) -> Option<usize> {
    loop {
        if stream.readable().await.is_err() {
            return None;
        }
        match stream.try_read(buf) {
            Ok(0) => return None,
            Ok(n) => return Some(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => return None,
        }
    }
}

/// Writes all of `buf`.
async fn write_all(stream: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        stream.writable().await?;
        match stream.try_write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An echo server on a free port; returns its address.
    async fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> io::Result<Vec<u8>> {
        s.write_all(msg).await?;
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).await?;
        Ok(got)
    }

    #[tokio::test]
    async fn pass_forwards_and_cut_closes() {
        let proxy = FaultProxy::start(echo().await).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut s, b"ping").await.unwrap(), b"ping");
        proxy.set(Fault::Cut);
        let mut buf = [0u8; 4];
        // EOF: the proxy closed the connection.
        assert_eq!(s.read(&mut buf).await.unwrap(), 0);
        // New connections are closed at once while cut.
        let mut s2 = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(s2.read(&mut buf).await.unwrap_or(0), 0);
        proxy.set(Fault::Pass);
        let mut s3 = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut s3, b"back").await.unwrap(), b"back");
        assert!(proxy.connections_accepted() >= 3);
    }

    #[tokio::test]
    async fn reset_aborts_the_connection() {
        let proxy = FaultProxy::start(echo().await).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut s, b"x").await.unwrap(), b"x");
        proxy.set(Fault::Reset);
        let mut buf = [0u8; 4];
        let r = s.read(&mut buf).await;
        assert!(
            matches!(&r, Err(e) if e.kind() == io::ErrorKind::ConnectionReset),
            "expected a reset, got {r:?}"
        );
    }

    #[tokio::test]
    async fn black_hole_holds_bytes_until_it_ends() {
        let proxy = FaultProxy::start(echo().await).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut s, b"a").await.unwrap(), b"a");
        proxy.set(Fault::BlackHole);
        s.write_all(b"held").await.unwrap();
        let mut buf = [0u8; 4];
        // Nothing comes back while the hole lasts (bounded wait: the outcome asserted is
        // that the read is still pending, not how long anything took).
        let pending =
            tokio::time::timeout(Duration::from_millis(200), s.read_exact(&mut buf)).await;
        assert!(pending.is_err(), "bytes crossed a black hole");
        proxy.set(Fault::Pass);
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"held");
    }

    #[tokio::test]
    async fn url_keeps_credentials_and_path() {
        let proxy = FaultProxy::start("127.0.0.1:9".parse().unwrap())
            .await
            .unwrap();
        let p = proxy.addr();
        assert_eq!(
            proxy.url_for("redis://u:pw@127.0.0.1:6379/2"),
            format!("redis://u:pw@{p}/2")
        );
        assert_eq!(proxy.url_for("redis://h:1"), format!("redis://{p}"));
    }
}
