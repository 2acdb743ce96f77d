//! Per-address token buckets for open endpoints (the public license query):
//! `.wrap(from_fn(limit(limiter)))`. Over the limit → 429 problem+json
//! `RATE_LIMITED` with `Retry-After`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError};
use futures::future::LocalBoxFuture;

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

    /// Takes a token for `ip`; else the seconds until one is there.
    pub fn take(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
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
            let ip = req.peer_addr().map(|a| a.ip());
            if let Some(ip) = ip {
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
}
