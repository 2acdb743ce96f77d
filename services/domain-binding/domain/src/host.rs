//! Registrable domain (eTLD+1) of a host, for binding a license to a domain.
//!
//! A license is bound to what its owner can register, not to one host name:
//! `app.example.com` and `www.example.com` share the binding `example.com`,
//! while `alice.github.io` and `bob.github.io` must not share `github.io`.
//! That boundary comes from the Public Suffix List (private section
//! included), via the `psl` crate, which embeds the list so that a lookup
//! never touches the network.
//!
//! Input is only a host: anything URL-shaped is refused with its own code
//! instead of being silently cut down, so that a caller who pasted a URL
//! learns what to fix. IP literals are refused because they have no
//! registrable domain and would bind a license to one network address.

use std::net::Ipv6Addr;

/// A host that may carry a domain binding, all in ASCII (punycode) so that
/// the Unicode and punycode spellings of one name bind alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registrable {
    /// The normalised host: lower case, no trailing dot, punycode.
    pub host: String,
    /// The registrable domain (eTLD+1) that the binding is keyed on.
    pub domain: String,
    /// The public suffix under which `domain` was registered.
    pub suffix: String,
}

/// Why a host cannot carry a binding; `code` is the stable API error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("host is empty")]
    Empty,
    #[error("a host, not a URL, is expected: remove the scheme")]
    Scheme,
    #[error("a host, not a URL, is expected: remove the user info")]
    Userinfo,
    #[error("a host, not a URL, is expected: remove the path, query or fragment")]
    Path,
    #[error("a host, not a URL, is expected: remove the port")]
    Port,
    #[error("IP addresses cannot be bound, only domain names")]
    Ip,
    #[error("not a valid host name")]
    Invalid,
    #[error("host is a public suffix, which nobody can register")]
    PublicSuffix,
}

impl HostError {
    pub fn code(&self) -> &'static str {
        match self {
            HostError::Empty => "EMPTY_HOST",
            HostError::Scheme => "SCHEME_NOT_ALLOWED",
            HostError::Userinfo => "USERINFO_NOT_ALLOWED",
            HostError::Path => "PATH_NOT_ALLOWED",
            HostError::Port => "PORT_NOT_ALLOWED",
            HostError::Ip => "IP_NOT_ALLOWED",
            HostError::Invalid => "INVALID_HOST",
            HostError::PublicSuffix => "PUBLIC_SUFFIX",
        }
    }
}

/// Normalises `input` and finds its registrable domain.
///
/// Checks run from the outside of a URL inwards, so the first code returned
/// names the outermost thing to remove.
pub fn registrable(input: &str) -> Result<Registrable, HostError> {
    let input = input.trim();
    if input.is_empty() {
        return Err(HostError::Empty);
    }
    if input.contains("://") {
        return Err(HostError::Scheme);
    }
    if input.contains(['/', '?', '#']) {
        return Err(HostError::Path);
    }
    if input.contains('@') {
        return Err(HostError::Userinfo);
    }
    let (name, has_port) = split_port(input)?;
    // One trailing dot is the DNS root: `example.com.` is `example.com`.
    let name = name.strip_suffix('.').unwrap_or(name);
    // Checked before parsing, which forgives one more trailing dot on IPv4
    // and would percent-decode `%41` into a letter.
    if name.split('.').any(str::is_empty) || name.chars().any(|c| c.is_ascii() && !is_host_char(c))
    {
        return Err(HostError::Invalid);
    }
    // `url::Host::parse` does UTS 46 and the WHATWG IPv4 parser, so every
    // IPv4 spelling a browser accepts (`0x7f.1`, `2130706433`) is caught.
    let host = match url::Host::parse(name) {
        Ok(url::Host::Domain(host)) => host,
        Ok(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => return Err(HostError::Ip),
        Err(_) => return Err(HostError::Invalid),
    };
    if has_port {
        return Err(HostError::Port);
    }
    // UTS 46 as browsers run it checks neither DNS lengths nor characters.
    if host.len() > 253
        || host
            .split('.')
            .any(|label| label.is_empty() || label.len() > 63 || !label.chars().all(is_host_char))
    {
        return Err(HostError::Invalid);
    }
    let found = psl::domain(host.as_bytes()).ok_or(HostError::PublicSuffix)?;
    let domain = std::str::from_utf8(found.as_bytes()).map_err(|_| HostError::Invalid)?;
    let suffix = std::str::from_utf8(found.suffix().as_bytes()).map_err(|_| HostError::Invalid)?;
    Ok(Registrable {
        domain: domain.to_owned(),
        suffix: suffix.to_owned(),
        host,
    })
}

/// Splits off a port, deciding IPv6 literals first: their colons are not
/// ports, and `[::1]:443` is an IP before it is a port.
fn split_port(input: &str) -> Result<(&str, bool), HostError> {
    if let Some(rest) = input.strip_prefix('[') {
        let (inner, _) = rest.split_once(']').ok_or(HostError::Invalid)?;
        return Err(match inner.parse::<Ipv6Addr>() {
            Ok(_) => HostError::Ip,
            Err(_) => HostError::Invalid,
        });
    }
    match input.split_once(':') {
        None => Ok((input, false)),
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => Ok((name, true)),
        Some(_) if input.parse::<Ipv6Addr>().is_ok() => Err(HostError::Ip),
        Some(_) => Err(HostError::Invalid),
    }
}

/// Letters, digits and hyphen, plus underscore: browsers resolve hosts such
/// as `my_app.example.com`, and refusing them would break real customers.
fn is_host_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_suffix_list_cases() {
        let mut count = 0;
        for (n, line) in include_str!("psl_cases.txt").lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (input, expected) = line
                .split_once(' ')
                .unwrap_or_else(|| panic!("psl_cases.txt:{}: malformed", n + 1));
            let got = registrable(input).map(|r| r.domain);
            match expected {
                "null" => assert!(got.is_err(), "{input}: expected no domain, got {got:?}"),
                domain => assert_eq!(got.as_deref(), Ok(domain), "{input}"),
            }
            count += 1;
        }
        assert!(count >= 80, "only {count} cases read");
    }

    #[test]
    fn rejections_carry_their_code() {
        let cases = [
            ("", "EMPTY_HOST"),
            ("   ", "EMPTY_HOST"),
            ("https://example.com", "SCHEME_NOT_ALLOWED"),
            ("https://user@example.com:443/x", "SCHEME_NOT_ALLOWED"),
            ("example.com/x", "PATH_NOT_ALLOWED"),
            ("example.com?q=1", "PATH_NOT_ALLOWED"),
            ("example.com#top", "PATH_NOT_ALLOWED"),
            ("//example.com", "PATH_NOT_ALLOWED"),
            ("user@example.com", "USERINFO_NOT_ALLOWED"),
            ("user:pw@example.com", "USERINFO_NOT_ALLOWED"),
            ("example.com:443", "PORT_NOT_ALLOWED"),
            ("example.com:", "PORT_NOT_ALLOWED"),
            ("1.2.3.4", "IP_NOT_ALLOWED"),
            ("1.2.3.4.", "IP_NOT_ALLOWED"),
            ("1.2.3.4:80", "IP_NOT_ALLOWED"),
            ("0x7f.1", "IP_NOT_ALLOWED"),
            ("127.1", "IP_NOT_ALLOWED"),
            ("2130706433", "IP_NOT_ALLOWED"),
            ("[::1]", "IP_NOT_ALLOWED"),
            ("::1", "IP_NOT_ALLOWED"),
            ("::ffff:1.2.3.4", "IP_NOT_ALLOWED"),
            ("[::ffff:1.2.3.4]:443", "IP_NOT_ALLOWED"),
            ("[2001:db8::1]", "IP_NOT_ALLOWED"),
            (".", "INVALID_HOST"),
            ("..", "INVALID_HOST"),
            (".example.com", "INVALID_HOST"),
            ("a..example.com", "INVALID_HOST"),
            ("example.com..", "INVALID_HOST"),
            ("exa mple.com", "INVALID_HOST"),
            ("exa%6dple.com", "INVALID_HOST"),
            ("exa*mple.com", "INVALID_HOST"),
            ("[example.com]", "INVALID_HOST"),
            ("[::1", "INVALID_HOST"),
            ("https:example.com", "INVALID_HOST"),
            ("xn--a.com", "INVALID_HOST"),
            ("com", "PUBLIC_SUFFIX"),
            ("co.uk", "PUBLIC_SUFFIX"),
            ("公司.cn", "PUBLIC_SUFFIX"),
            ("example", "PUBLIC_SUFFIX"),
            ("github.io", "PUBLIC_SUFFIX"),
        ];
        for (input, code) in cases {
            assert_eq!(
                registrable(input).map_err(|e| e.code()),
                Err(code),
                "{input:?}"
            );
        }
    }

    #[test]
    fn lengths_are_dns_limits() {
        let label63 = "a".repeat(63);
        assert!(registrable(&format!("{label63}.com")).is_ok());
        let label64 = "a".repeat(64);
        assert_eq!(
            registrable(&format!("{label64}.com")),
            Err(HostError::Invalid)
        );

        let label57 = "a".repeat(57);
        let longest = format!("{label63}.{label63}.{label63}.{label57}.com");
        assert_eq!(longest.len(), 253);
        assert!(registrable(&longest).is_ok());
        assert!(registrable(&format!("{longest}.")).is_ok());
        assert_eq!(registrable(&format!("a{longest}")), Err(HostError::Invalid));
    }

    #[test]
    fn normalises_to_punycode() {
        let r = registrable("  MÜNCHEN.de ");
        assert_eq!(
            r,
            Ok(Registrable {
                host: "xn--mnchen-3ya.de".into(),
                domain: "xn--mnchen-3ya.de".into(),
                suffix: "de".into(),
            })
        );
        assert_eq!(r, registrable("xn--mnchen-3ya.de"));
        assert_eq!(
            registrable("WWW.Example.COM").map(|r| r.host),
            Ok("www.example.com".into())
        );
    }

    #[test]
    fn strips_one_trailing_dot() {
        assert_eq!(
            registrable("example.com.").map(|r| (r.host, r.domain)),
            Ok(("example.com".into(), "example.com".into()))
        );
        assert_eq!(registrable("example.com.."), Err(HostError::Invalid));
        assert_eq!(registrable("com."), Err(HostError::PublicSuffix));
    }

    #[test]
    fn reduces_subdomains() {
        let cases = [
            ("cloud.example.com", "example.com", "com"),
            ("a.b.c.example.co.uk", "example.co.uk", "co.uk"),
            ("my_app.example.com", "example.com", "com"),
            ("alice.github.io", "alice.github.io", "github.io"),
        ];
        for (input, domain, suffix) in cases {
            let r = registrable(input);
            assert_eq!(r.as_ref().map(|r| r.host.as_str()), Ok(input), "{input}");
            assert_eq!(r.as_ref().map(|r| r.domain.as_str()), Ok(domain), "{input}");
            assert_eq!(r.as_ref().map(|r| r.suffix.as_str()), Ok(suffix), "{input}");
        }
    }
}
