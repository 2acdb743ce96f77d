//! Outbound HTTP calls to addresses a caller chose (upstream license
//! servers; later, webhooks): TLS verified against the system roots or a
//! configured CA (rustls), no redirects, bounded time, and no connection to
//! a loopback, private, link-local or otherwise non-public address unless
//! the operator allowed its network — checked on the address each name
//! resolves to, so a name that resolves to an internal address (or changes
//! to one later) is refused too.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use contracts::net::{refused_destination, Cidr};

#[derive(Debug, Clone, Default)]
pub struct OutboundConfig {
    pub timeout: Duration,
    /// PEM file of a CA trusted besides the system roots.
    pub ca_file: Option<String>,
    /// Networks that may be called although not public.
    pub allowed_networks: Vec<Cidr>,
}

/// Parses CIDR settings; the first bad entry on error.
pub fn networks(entries: &[String]) -> Result<Vec<Cidr>, String> {
    entries
        .iter()
        .map(|e| Cidr::parse(e).ok_or_else(|| e.clone()))
        .collect()
}

/// Why a URL may not be called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{0} is not an https URL (plain http is refused unless allowed for it)")]
    Insecure(String),
    #[error("{0} is not a URL with a host")]
    Malformed(String),
    #[error("{host}: {ip} is {why}")]
    Address {
        host: String,
        ip: IpAddr,
        why: &'static str,
    },
}

/// Checks a URL before calling it: the scheme, and a literal address
/// (names are checked as they resolve).
pub fn check_url(url: &str, allow_http: bool, allowed: &[Cidr]) -> Result<url::Url, Refused> {
    let u = url::Url::parse(url).map_err(|_| Refused::Malformed(url.to_string()))?;
    match u.scheme() {
        "https" => {}
        "http" if allow_http => {}
        _ => return Err(Refused::Insecure(url.to_string())),
    }
    let ip = match u.host() {
        Some(url::Host::Ipv4(a)) => Some(IpAddr::V4(a)),
        Some(url::Host::Ipv6(a)) => Some(IpAddr::V6(a)),
        Some(url::Host::Domain(_)) => None,
        None => return Err(Refused::Malformed(url.to_string())),
    };
    if let Some(ip) = ip {
        if let Some(why) = refused_destination(ip, allowed) {
            return Err(Refused::Address {
                host: u.host_str().unwrap_or_default().to_string(),
                ip,
                why,
            });
        }
    }
    Ok(u)
}

/// Resolves names, keeping only the addresses an outbound call may reach.
struct GuardedResolver {
    allowed: Arc<Vec<Cidr>>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allowed = self.allowed.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let ok: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match refused_destination(a.ip(), &allowed) {
                    None => true,
                    Some(why) => {
                        refused = Some(Refused::Address {
                            host: host.clone(),
                            ip: a.ip(),
                            why,
                        });
                        false
                    }
                })
                .collect();
            if ok.is_empty() {
                let e: Box<dyn std::error::Error + Send + Sync> = match refused {
                    Some(r) => Box::new(r),
                    None => format!("{host}: no address").into(),
                };
                return Err(e);
            }
            let addrs: reqwest::dns::Addrs = Box::new(ok.into_iter());
            Ok(addrs)
        })
    }
}

/// The client of outbound calls under `cfg`.
pub fn client(cfg: &OutboundConfig) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout)
        .redirect(reqwest::redirect::Policy::none())
        // A proxy from the environment would resolve names itself, past
        // the guard below.
        .no_proxy()
        .dns_resolver(Arc::new(GuardedResolver {
            allowed: Arc::new(cfg.allowed_networks.clone()),
        }));
    if let Some(path) = &cfg.ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("{path}: {e}"))?;
        if certs.is_empty() {
            return Err(format!("{path}: no certificate"));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build().map_err(|e| e.to_string())
}

/// A failed call's cause, for a message an operator reads: the refusal
/// when the guard refused, else what kind of failure it was.
pub fn describe(e: &reqwest::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<Refused>() {
            return format!("refused: {r}");
        }
        source = s.source();
    }
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        // TLS failures surface here too: say so without the details.
        let text = format!("{e:?}");
        if text.contains("certificate") || text.contains("Certificate") {
            "TLS handshake failed: certificate not trusted".into()
        } else {
            "connection failed".into()
        }
    } else {
        "request failed".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_before_any_call() {
        let lo = [Cidr::parse("127.0.0.0/8").expect("cidr")];
        assert!(check_url("https://licensing.example.com/x", false, &[]).is_ok());
        assert!(matches!(
            check_url("http://licensing.example.com", false, &[]),
            Err(Refused::Insecure(_))
        ));
        assert!(check_url("http://licensing.example.com", true, &[]).is_ok());
        assert!(matches!(
            check_url("https://127.0.0.1:8443", false, &[]),
            Err(Refused::Address {
                why: "a loopback address",
                ..
            })
        ));
        assert!(check_url("https://127.0.0.1:8443", false, &lo).is_ok());
        assert!(matches!(
            check_url("https://[::ffff:169.254.169.254]/", false, &lo),
            Err(Refused::Address { .. })
        ));
        assert!(matches!(
            check_url("ftp://x", true, &[]),
            Err(Refused::Insecure(_))
        ));
        assert!(matches!(
            check_url("not a url", true, &[]),
            Err(Refused::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_an_internal_address_is_refused() {
        use reqwest::dns::Resolve;
        let name = |n: &str| n.parse::<reqwest::dns::Name>().expect("name");
        let strict = GuardedResolver {
            allowed: Arc::new(vec![]),
        };
        let e = match strict.resolve(name("localhost")).await {
            Ok(_) => panic!("localhost resolved to an allowed address"),
            Err(e) => e,
        };
        assert!(e.to_string().contains("loopback"), "{e}");
        let lax = GuardedResolver {
            allowed: Arc::new(networks(&["127.0.0.0/8".into(), "::1/128".into()]).expect("cidr")),
        };
        let addrs: Vec<SocketAddr> = lax
            .resolve(name("localhost"))
            .await
            .expect("resolves")
            .collect();
        assert!(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()));
    }
}
