//! The client IP: the socket peer, unless the peer is a trusted proxy.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderName, Request};
use tower::{Layer, Service};

use crate::config::IpNetwork;

/// `X-Forwarded-For`.
pub static FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The client's IP address as decided by [`ClientIpLayer`], in the request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientIp(pub IpAddr);

/// Puts the [`ClientIp`] in the request's extensions.
///
/// The IP is the socket peer's (from axum's `ConnectInfo<SocketAddr>`: serve with
/// `into_make_service_with_connect_info::<SocketAddr>()`). Only when the peer is inside one
/// of the `trusted` networks is `X-Forwarded-For` read: its entries are walked from the
/// right (the hop nearest to us), skipping trusted proxies, and the first untrusted address
/// is the client. A malformed entry stops the walk at the last address we could vouch for.
/// A spoofed header from anyone else is ignored. Without `ConnectInfo` no `ClientIp` is set.
#[derive(Debug, Clone, Default)]
pub struct ClientIpLayer {
    trusted: Arc<[IpNetwork]>,
}

impl ClientIpLayer {
    /// A layer believing `X-Forwarded-For` only from peers in `trusted`.
    pub fn new(trusted: impl Into<Arc<[IpNetwork]>>) -> Self {
        Self {
            trusted: trusted.into(),
        }
    }

    /// The client IP of a request from `peer` with `headers`.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        client_ip(&self.trusted, peer, headers)
    }
}

impl<S> Layer<S> for ClientIpLayer {
    type Service = ClientIpService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientIpService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`ClientIpLayer`].
#[derive(Debug, Clone)]
pub struct ClientIpService<S> {
    inner: S,
    layer: ClientIpLayer,
}

impl<S, B> Service<Request<B>> for ClientIpService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        if let Some(peer) = peer {
            let ip = self.layer.resolve(peer, req.headers());
            req.extensions_mut().insert(ClientIp(ip));
        }
        self.inner.call(req)
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) become IPv4, so one client has one key.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

fn is_trusted(trusted: &[IpNetwork], ip: IpAddr) -> bool {
    trusted.iter().any(|n| n.contains(ip))
}

/// One `X-Forwarded-For` entry: an address, maybe with a port (`1.2.3.4:80`, `[::1]:80`).
fn parse_entry(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse().ok())
}

fn client_ip(trusted: &[IpNetwork], peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    let peer = canonical(peer);
    if !is_trusted(trusted, peer) {
        return peer;
    }
    // Every X-Forwarded-For header, in order, as one list.
    let mut entries: Vec<&str> = Vec::new();
    for value in headers.get_all(&FORWARDED_FOR) {
        match value.to_str() {
            Ok(v) => entries.extend(v.split(',')),
            // Unreadable header: nothing in it can be vouched for.
            Err(_) => return peer,
        }
    }
    let mut last_vouched = peer;
    for entry in entries.iter().rev() {
        let Some(ip) = parse_entry(entry).map(canonical) else {
            return last_vouched;
        };
        if !is_trusted(trusted, ip) {
            return ip;
        }
        last_vouched = ip;
    }
    last_vouched
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::http::HeaderValue;

    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNetwork> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append(FORWARDED_FOR.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peers_cannot_spoof() {
        let t = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(&t, ip("203.0.113.9"), &headers(&["1.1.1.1"])),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(&[], ip("127.0.0.1"), &headers(&["1.1.1.1"])),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn trusted_proxies_give_the_rightmost_untrusted_entry() {
        let t = nets(&["10.0.0.0/8", "127.0.0.1"]);
        let peer = ip("127.0.0.1");
        assert_eq!(
            client_ip(&t, peer, &headers(&["6.6.6.6, 1.2.3.4, 10.1.1.1"])),
            ip("1.2.3.4")
        );
        // Several headers form one list.
        assert_eq!(
            client_ip(&t, peer, &headers(&["6.6.6.6", "1.2.3.4, 10.0.0.2"])),
            ip("1.2.3.4")
        );
        // Only proxies: the leftmost is the best we know.
        assert_eq!(
            client_ip(&t, peer, &headers(&["10.0.0.3, 10.0.0.2"])),
            ip("10.0.0.3")
        );
        // No header: the peer.
        assert_eq!(client_ip(&t, peer, &headers(&[])), peer);
        // Ports and brackets.
        assert_eq!(
            client_ip(&t, peer, &headers(&["[2001:db8::1]:443"])),
            ip("2001:db8::1")
        );
        assert_eq!(
            client_ip(&t, peer, &headers(&["1.2.3.4:8080"])),
            ip("1.2.3.4")
        );
    }

    #[test]
    fn garbage_stops_at_the_last_vouched_hop() {
        let t = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(
                &t,
                ip("10.0.0.1"),
                &headers(&["1.2.3.4, garbage, 10.0.0.9"])
            ),
            ip("10.0.0.9")
        );
        assert_eq!(
            client_ip(&t, ip("10.0.0.1"), &headers(&["unknown"])),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn mapped_addresses_are_canonical() {
        let t = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(&t, ip("::ffff:10.0.0.1"), &headers(&["::ffff:1.2.3.4"])),
            ip("1.2.3.4")
        );
    }
}
