//! Per-address token buckets for open endpoints (the public license query):
//! `.wrap(from_fn(limit(limiter)))`. Over the limit → 429 problem+json
//! `RATE_LIMITED` with `Retry-After`.
//!
//! The address is the client's ([`client_ip`]: the peer, or what trusted
//! proxies forward), and an IPv6 client is one /64: a single host is
//! routinely given a whole /64 and may rotate through it at will.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::ServiceRequest;
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError};

use crate::client_addr::client_ip;
use crate::server::Middleware;
use crate::Problem;

/// Buckets kept before idle (full) ones are dropped.
const MAX_BUCKETS: usize = 100_000;

/// Where every new address goes while the table is full of addresses that
/// are all still limited: one shared bucket, so a flood of fresh addresses
/// is limited as one and costs no more than one look-up each.
const OVERFLOW: IpAddr = IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);

pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    buckets: Mutex<Buckets>,
}

#[derive(Default)]
struct Buckets {
    map: HashMap<IpAddr, (f64, Instant)>,
    /// When idle buckets were last dropped: at most once a second, so a
    /// full table of busy addresses is not scanned on every request.
    swept: Option<Instant>,
}

impl RateLimiter {
    pub fn new(per_sec: u32, burst: u32) -> Self {
        Self {
            per_sec: f64::from(per_sec.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(Buckets::default()),
        }
    }

    /// Takes a token for `ip`'s bucket (see [`bucket`]); else the seconds
    /// until one is there.
    pub fn take(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        let mut ip = bucket(ip);
        let Ok(mut guard) = self.buckets.lock() else {
            return Ok(());
        };
        let b = &mut *guard;
        if b.map.len() >= MAX_BUCKETS && !b.map.contains_key(&ip) {
            if b.swept.is_none_or(|t| now.duration_since(t).as_secs() >= 1) {
                b.swept = Some(now);
                let (rate, burst) = (self.per_sec, self.burst);
                b.map.retain(|_, (tokens, at)| {
                    *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
                });
            }
            if b.map.len() >= MAX_BUCKETS {
                ip = OVERFLOW;
            }
        }
        let (tokens, at) = b.map.entry(ip).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_sec).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.per_sec).ceil().max(1.0) as u64)
        }
    }
}

/// The bucket of an address: an IPv4 address (also written IPv4-mapped,
/// `::ffff:a.b.c.d`) is its own, an IPv6 address shares its /64.
pub fn bucket(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

pub fn limit(limiter: Arc<RateLimiter>) -> impl Middleware {
    move |req: ServiceRequest, next: Next<BoxBody>| {
        let limiter = limiter.clone();
        Box::pin(async move {
            if let Some(ip) = client_ip(req.request()) {
                if let Err(retry) = limiter.take(ip, Instant::now()) {
                    let problem = Problem::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "RATE_LIMITED",
                        "Too many requests",
                    )
                    .with_detail(format!("retry in {retry} s"));
                    let mut res: HttpResponse = problem.error_response();
                    if let Ok(v) = retry.to_string().parse() {
                        res.headers_mut()
                            .insert(actix_web::http::header::RETRY_AFTER, v);
                    }
                    return Ok(req.into_response(res.map_into_boxed_body()));
                }
            }
            next.call(req).await.map(|r| r.map_body(|_, b| b.boxed()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate() {
        let l = RateLimiter::new(2, 3);
        let ip: IpAddr = [127, 0, 0, 1].into();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.take(ip, t0), Ok(()));
        }
        assert_eq!(l.take(ip, t0), Err(1));
        // Half a second at 2/s refills one token.
        assert_eq!(l.take(ip, t0 + Duration::from_millis(500)), Ok(()));
        assert!(l.take(ip, t0 + Duration::from_millis(500)).is_err());
        // Another address has its own bucket.
        assert_eq!(l.take([10, 0, 0, 1].into(), t0), Ok(()));
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn a_flood_of_new_addresses_shares_one_bucket_once_the_table_is_full() {
        let l = RateLimiter::new(1, 2);
        let t0 = Instant::now();
        // Fill the table with addresses that are all still limited.
        for i in 0..MAX_BUCKETS as u32 {
            assert_eq!(l.take(IpAddr::V4(i.into()), t0), Ok(()));
        }
        let fresh = |i: u32| {
            IpAddr::V6(std::net::Ipv6Addr::new(
                0x2001, 0xdb8, 0, i as u16, 0, 0, 0, 1,
            ))
        };
        // New addresses draw from the overflow bucket: its burst, then no more.
        assert_eq!(l.take(fresh(1), t0), Ok(()));
        assert_eq!(l.take(fresh(2), t0), Ok(()));
        assert!(l.take(fresh(3), t0).is_err());
        // Known addresses keep their own buckets.
        assert_eq!(l.take(IpAddr::V4(7u32.into()), t0), Ok(()));
        // Once they are idle again, a sweep makes room.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(l.take(fresh(4), later), Ok(()));
        assert_eq!(
            l.buckets
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .map
                .len(),
            1
        );
    }

    #[test]
    fn an_ipv6_client_rotating_through_its_64_shares_one_bucket() {
        let l = RateLimiter::new(1, 3);
        let t0 = Instant::now();
        for host in [
            "2001:db8:1:2::1",
            "2001:db8:1:2::2",
            "2001:db8:1:2:ffff:ffff:ffff:ffff",
        ] {
            assert_eq!(l.take(ip(host), t0), Ok(()), "{host}");
        }
        assert!(l.take(ip("2001:db8:1:2:dead:beef::7"), t0).is_err());
        // The next /64 is another client.
        assert_eq!(l.take(ip("2001:db8:1:3::1"), t0), Ok(()));
        assert_eq!(bucket(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
    }

    #[test]
    fn a_mapped_address_shares_the_bucket_of_its_ipv4_address() {
        let l = RateLimiter::new(1, 2);
        let t0 = Instant::now();
        assert_eq!(l.take(ip("203.0.113.7"), t0), Ok(()));
        assert_eq!(l.take(ip("::ffff:203.0.113.7"), t0), Ok(()));
        assert!(l.take(ip("203.0.113.7"), t0).is_err());
        // IPv4 addresses are not grouped: a neighbour has its own.
        assert_eq!(l.take(ip("203.0.113.8"), t0), Ok(()));
        assert_eq!(bucket(ip("::ffff:203.0.113.7")), ip("203.0.113.7"));
    }
}
