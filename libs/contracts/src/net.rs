//! IP allowlist entries: an address (`203.0.113.7`, `2001:db8::1`) or a
//! CIDR block (`10.0.0.0/8`). Parsed the same way where keys are created
//! and where requests are checked.

use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Self> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, p.parse::<u8>().ok()?),
            None => {
                let a = s.parse::<IpAddr>().ok()?;
                (a, if a.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Self { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
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
pub fn check_allowlist(list: &[String]) -> Result<(), AllowlistError> {
    if list.len() > crate::issuance::MAX_ALLOWLIST {
        return Err(AllowlistError::TooLong);
    }
    match list.iter().find(|e| Cidr::parse(e).is_none()) {
        Some(bad) => Err(AllowlistError::Invalid(bad.chars().take(64).collect())),
        None => Ok(()),
    }
}

/// The longest callback or endpoint URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// An `http://` or `https://` URL with something after the scheme, at most
/// [`MAX_URL_LEN`] characters, no whitespace or control characters.
pub fn is_http_url(url: &str) -> bool {
    (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() <= MAX_URL_LEN
        && url.len() > "https://".len()
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
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
            check_allowlist(&["example.com".into()]),
            Err(AllowlistError::Invalid("example.com".into()))
        );
    }

    #[test]
    fn http_urls() {
        assert!(is_http_url("https://billing.example/callback"));
        assert!(is_http_url("http://127.0.0.1:8084"));
        for bad in ["ftp://x", "https://", "https://a b", "example.com"] {
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
