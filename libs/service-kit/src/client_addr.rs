//! The address a request comes from, for rate limits and allowlists.
//!
//! Behind a reverse proxy every peer is the proxy; the client is in the
//! `X-Forwarded-For` it appends. That header is anyone's to write, so it is
//! read only when the peer is a configured trusted proxy, and then from the
//! right: each trusted proxy appends the address it received from, so the
//! first address (right to left) that is no trusted proxy is the one the
//! proxies vouch for. Whatever the client wrote further left is ignored.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use actix_web::HttpRequest;
use contracts::net::Cidr;

/// The `trusted_proxies` of the config, as app data (see
/// [`crate::ServiceApp::app`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies(pub(crate) Arc<[Cidr]>);

impl TrustedProxies {
    fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }
}

/// The client's address: the peer's, unless the peer is a trusted proxy;
/// then the right-most address of `X-Forwarded-For` that is not itself a
/// trusted proxy (the left-most one when all are). A header that is not
/// a list of addresses where it is read falls back to the peer. IPv4-mapped
/// IPv6 addresses are answered as their IPv4 address. None only when the
/// peer is unknown (a request built without a connection).
pub fn client_ip(req: &HttpRequest) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip().to_canonical();
    let Some(trusted) = req.app_data::<TrustedProxies>() else {
        return Some(peer);
    };
    if !trusted.contains(peer) {
        return Some(peer);
    }
    let mut hops = Vec::new();
    for value in req.headers().get_all("x-forwarded-for") {
        let Ok(text) = value.to_str() else {
            return Some(peer);
        };
        hops.extend(text.split(','));
    }
    let mut client = peer;
    for hop in hops.iter().rev() {
        // A hop that does not parse was written by a trusted proxy (all to
        // its right were trusted): the chain is broken, believe none of it.
        let Some(ip) = parse_hop(hop) else {
            return Some(peer);
        };
        client = ip;
        if !trusted.contains(ip) {
            break;
        }
    }
    Some(client)
}

/// `203.0.113.7`, `2001:db8::1`, or either with a port (`[2001:db8::1]:443`),
/// as some proxies write them.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies(
            list.iter()
                .map(|c| Cidr::parse(c).expect("cidr"))
                .collect::<Vec<_>>()
                .into(),
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    /// The client address of a request from `peer` carrying `xff` (one
    /// header line each) to a service trusting `trusted`.
    fn from(peer: &str, xff: &[&str], trusted: &[&str]) -> Option<IpAddr> {
        let mut req = TestRequest::default()
            .peer_addr(SocketAddr::new(ip(peer), 40_000))
            .app_data(proxies(trusted));
        for line in xff {
            req = req.append_header(("X-Forwarded-For", *line));
        }
        client_ip(&req.to_http_request())
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_whatever_the_header_says() {
        assert_eq!(from("203.0.113.7", &[], &[]), Some(ip("203.0.113.7")));
        assert_eq!(
            from("203.0.113.7", &["198.51.100.1"], &[]),
            Some(ip("203.0.113.7"))
        );
        // No app data at all (an App built by hand): the peer too.
        let req = TestRequest::default()
            .peer_addr("203.0.113.7:1".parse().expect("addr"))
            .insert_header(("X-Forwarded-For", "198.51.100.1"))
            .to_http_request();
        assert_eq!(client_ip(&req), Some(ip("203.0.113.7")));
    }

    #[test]
    fn an_untrusted_peer_cannot_spoof_its_address_through_the_header() {
        let trusted = ["10.0.0.0/8"];
        for xff in ["10.0.0.5", "198.51.100.1", "198.51.100.1, 10.0.0.5"] {
            assert_eq!(
                from("203.0.113.7", &[xff], &trusted),
                Some(ip("203.0.113.7")),
                "{xff}"
            );
        }
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
        let trusted = ["10.0.0.0/8", "2001:db8:ffff::1"];
        // One proxy.
        assert_eq!(
            from("10.0.0.2", &["198.51.100.9"], &trusted),
            Some(ip("198.51.100.9"))
        );
        // Two proxies; what the client itself wrote further left is ignored.
        assert_eq!(
            from(
                "10.0.0.2",
                &["6.6.6.6, 198.51.100.9, 2001:db8:ffff::1"],
                &trusted
            ),
            Some(ip("198.51.100.9"))
        );
        // Spread over two header lines, in order.
        assert_eq!(
            from("10.0.0.2", &["6.6.6.6, 198.51.100.9", "10.1.1.1"], &trusted),
            Some(ip("198.51.100.9"))
        );
        // Ports and brackets, as some proxies write them.
        assert_eq!(
            from("10.0.0.2", &["[2001:db8::7]:4711"], &trusted),
            Some(ip("2001:db8::7"))
        );
        assert_eq!(
            from("10.0.0.2", &["198.51.100.9:80"], &trusted),
            Some(ip("198.51.100.9"))
        );
        // A trusted proxy that forwards nothing: the proxy is the client.
        assert_eq!(from("10.0.0.2", &[], &trusted), Some(ip("10.0.0.2")));
        // Every hop a trusted proxy: the farthest one.
        assert_eq!(
            from("10.0.0.2", &["10.9.9.9, 10.0.0.3"], &trusted),
            Some(ip("10.9.9.9"))
        );
    }

    #[test]
    fn garbage_the_client_wrote_left_of_its_address_is_ignored() {
        let trusted = ["10.0.0.0/8"];
        assert_eq!(
            from("10.0.0.2", &["unknown, <script>, 198.51.100.9"], &trusted),
            Some(ip("198.51.100.9"))
        );
    }

    #[test]
    fn a_malformed_header_where_it_is_read_falls_back_to_the_peer() {
        let trusted = ["10.0.0.0/8"];
        for xff in [
            "",
            "unknown",
            "198.51.100.9, not-an-ip",
            "198.51.100.9,",
            "198.51.100.9 10.0.0.3",
            "1.2.3.4/24",
        ] {
            assert_eq!(
                from("10.0.0.2", &[xff], &trusted),
                Some(ip("10.0.0.2")),
                "{xff:?}"
            );
        }
        // A value that is not visible ASCII.
        let req = TestRequest::default()
            .peer_addr("10.0.0.2:1".parse().expect("addr"))
            .app_data(proxies(&trusted))
            .insert_header((
                "X-Forwarded-For",
                actix_web::http::header::HeaderValue::from_bytes(b"198.51.100.9\xff")
                    .expect("obs-text is a valid header value"),
            ))
            .to_http_request();
        assert_eq!(client_ip(&req), Some(ip("10.0.0.2")));
    }

    #[test]
    fn mapped_addresses_count_as_their_ipv4_address() {
        // A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d.
        assert_eq!(
            from("::ffff:203.0.113.7", &[], &[]),
            Some(ip("203.0.113.7"))
        );
        let trusted = ["10.0.0.0/8"];
        assert_eq!(
            from("::ffff:10.0.0.2", &["::ffff:198.51.100.9"], &trusted),
            Some(ip("198.51.100.9"))
        );
        // A mapped hop of a trusted proxy is skipped like the proxy.
        assert_eq!(
            from("10.0.0.2", &["198.51.100.9, ::ffff:10.0.0.3"], &trusted),
            Some(ip("198.51.100.9"))
        );
    }
}
