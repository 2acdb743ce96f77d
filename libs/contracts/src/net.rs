//! IP allowlist entries: an address (`203.0.113.7`, `2001:db8::1`) or a
//! CIDR block (`10.0.0.0/8`). Parsed the same way where keys are created
//! and where requests are checked.

use std::net::IpAddr;

use ipnet::IpNet;

/// A block (`ipnet`'s), or a bare address as the block of that one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(IpNet);

impl Cidr {
    pub fn parse(s: &str) -> Option<Self> {
        match s.parse::<IpNet>() {
            Ok(net) => Some(Self(net)),
            Err(_) => s.parse::<IpAddr>().ok().map(|a| Self(IpNet::from(a))),
        }
    }

    /// Whether `ip` is in the block; an IPv4-mapped IPv6 address counts as
    /// its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }
}

/// Why an outbound call may not go to `ip`: None for a public unicast
/// address. Loopback, private (RFC 1918, ULA), link-local, CGNAT,
/// unspecified, broadcast, multicast, documentation and benchmarking
/// ranges are refused (an IPv4-mapped IPv6 address as its IPv4, and every
/// other IPv6 form that embeds an IPv4 address outright), unless
/// one of `allowed` contains the address.
pub fn refused_destination(ip: IpAddr, allowed: &[Cidr]) -> Option<&'static str> {
    if allowed.iter().any(|c| c.contains(ip)) {
        return None;
    }
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let in_any = |nets: &[&str]| {
        nets.iter()
            .filter_map(|n| Cidr::parse(n))
            .any(|c| c.contains(ip))
    };
    match ip {
        IpAddr::V4(v4) => {
            if v4.is_loopback() {
                Some("a loopback address")
            } else if v4.is_private() {
                Some("a private address")
            } else if v4.is_link_local() {
                Some("a link-local address")
            } else if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() {
                Some("not a unicast address")
            } else if in_any(&[
                "0.0.0.0/8",
                "100.64.0.0/10",
                "192.0.0.0/24",
                "198.18.0.0/15",
                "240.0.0.0/4",
            ]) {
                Some("a reserved address")
            } else if v4.is_documentation() {
                Some("a documentation address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_loopback() {
                Some("a loopback address")
            } else if v6.is_unspecified() || v6.is_multicast() {
                Some("not a unicast address")
            } else if in_any(&["fc00::/7"]) {
                Some("a private address")
            } else if in_any(&["fe80::/10"]) {
                Some("a link-local address")
            } else if in_any(&["::/96", "64:ff9b::/96", "2002::/16", "2001::/32"]) {
                // IPv4-compatible, NAT64, 6to4 and Teredo addresses carry an
                // IPv4 address a gateway may deliver to: judging them as
                // IPv6 would let 10.0.0.1 through as 2002:a00:1::.
                Some("an IPv6 transition address")
            } else if in_any(&["2001:db8::/32", "100::/64", "64:ff9b:1::/48"]) {
                Some("a reserved address")
            } else {
                None
            }
        }
    }
}

/// Why an allowlist is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowlistError {
    /// More than [`crate::issuance::MAX_ALLOWLIST`] entries.
    TooLong,
    /// An entry (shortened to 64 characters) that is no address or CIDR.
    Invalid(String),
}

/// An allowlist of at most ten addresses or CIDR blocks.
pub fn check_allowlist<S: AsRef<str>>(list: &[S]) -> Result<(), AllowlistError> {
    if list.len() > crate::issuance::MAX_ALLOWLIST {
        return Err(AllowlistError::TooLong);
    }
    match list.iter().find(|e| Cidr::parse(e.as_ref()).is_none()) {
        Some(bad) => Err(AllowlistError::Invalid(
            bad.as_ref().chars().take(64).collect(),
        )),
        None => Ok(()),
    }
}

/// The longest callback or endpoint URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// An `http://` or `https://` URL that parses, names a host, carries no
/// user name or password (it would be stored in events and shown in
/// answers), at most [`MAX_URL_LEN`] characters, no whitespace or control
/// characters.
pub fn is_http_url(url: &str) -> bool {
    if url.len() > MAX_URL_LEN || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    url::Url::parse(url).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https")
            && u.host_str().is_some_and(|h| !h.is_empty())
            && u.username().is_empty()
            && u.password().is_none()
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn only_public_unicast_destinations_pass_unless_allowed() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "2001:db8::1",
            "198.18.0.1",
            "::10.0.0.1",
            "::7f00:1",
            "64:ff9b::a00:1",
            "64:ff9b::808:808",
            "2002:a00:1::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        ] {
            assert!(refused_destination(ip(bad), &[]).is_some(), "{bad}");
        }
        for good in ["93.184.216.34", "2606:4700::1111", "1.1.1.1"] {
            assert_eq!(refused_destination(ip(good), &[]), None, "{good}");
        }
        let lo = [Cidr::parse("127.0.0.0/8").expect("cidr")];
        assert_eq!(refused_destination(ip("127.0.0.1"), &lo), None);
        assert!(refused_destination(ip("10.0.0.1"), &lo).is_some());
    }
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn addresses_and_blocks() {
        let one = Cidr::parse("203.0.113.7").expect("addr");
        assert!(one.contains(ip("203.0.113.7")));
        assert!(!one.contains(ip("203.0.113.8")));
        let net = Cidr::parse("10.0.0.0/8").expect("cidr");
        assert!(net.contains(ip("10.200.1.1")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(net.contains(ip("::ffff:10.1.2.3")), "v4-mapped v6 is v4");
        let v6 = Cidr::parse("2001:db8::/32").expect("v6");
        assert!(v6.contains(ip("2001:db8::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        assert!(Cidr::parse("0.0.0.0/0")
            .expect("all")
            .contains(ip("8.8.8.8")));
    }

    #[test]
    fn allowlists_hold_ten_entries_at_most() {
        let ten: Vec<String> = (0..10).map(|i| format!("10.0.0.{i}")).collect();
        assert_eq!(check_allowlist(&ten), Ok(()));
        let mut eleven = ten.clone();
        eleven.push("10.0.0.99".into());
        assert_eq!(check_allowlist(&eleven), Err(AllowlistError::TooLong));
        assert_eq!(
            check_allowlist(&["example.com"]),
            Err(AllowlistError::Invalid("example.com".into()))
        );
    }

    #[test]
    fn http_urls() {
        assert!(is_http_url("https://billing.example/callback"));
        assert!(is_http_url("http://127.0.0.1:8084"));
        assert!(is_http_url("https://[2001:db8::1]:8443/v1"));
        for bad in [
            "ftp://x",
            "https://",
            "https://a b",
            "example.com",
            "https://:443/x",
            "https://[::1",
            "https://user:secret@vendor.example",
            "https://user@vendor.example",
            "http://%zz/",
        ] {
            assert!(!is_http_url(bad), "{bad}");
        }
    }

    #[test]
    fn garbage_is_rejected() {
        for s in [
            "",
            "10.0.0.0/33",
            "example.com",
            "10.0.0/8",
            "::1/129",
            "1.2.3.4/x",
        ] {
            assert!(Cidr::parse(s).is_none(), "{s}");
        }
    }
}
