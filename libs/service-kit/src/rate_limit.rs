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
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError};
use futures::future::LocalBoxFuture;

use crate::client_addr::client_ip;
use crate::Problem;

/// Buckets kept before idle (full) ones are dropped.
const MAX_BUCKETS: usize = 100_000;

pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(per_sec: u32, burst: u32) -> Self {
        Self {
            per_sec: f64::from(per_sec.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `ip`'s bucket (see [`bucket`]); else the seconds
    /// until one is there.
    pub fn take(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        let ip = bucket(ip);
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        if buckets.len() >= MAX_BUCKETS {
            let (rate, burst) = (self.per_sec, self.burst);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = buckets.entry(ip).or_insert((self.burst, now));
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

pub fn limit(
    limiter: Arc<RateLimiter>,
) -> impl Fn(
    ServiceRequest,
    Next<BoxBody>,
) -> LocalBoxFuture<'static, Result<ServiceResponse<BoxBody>, actix_web::Error>>
       + Clone
       + 'static {
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
