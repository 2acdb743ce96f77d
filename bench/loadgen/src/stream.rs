//! `loadgen long-stream`: the same command on an aggregate with a long
//! history and on fresh aggregates, interleaved so both meet the same
//! machine (issue 17: within 1.2 x).
//!
//! Issues one license and gives it `--history` events (suspend, reinstate,
//! ... one client, each answered 200); then `--count` times: issues a fresh
//! license and suspends it (measured: a fresh aggregate), suspends the long
//! license (measured) and reinstates it (not measured). Prints p50/p99/mean
//! of both and their ratios, and the long license's final event count.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::{percentile, round, Opts, BODY};

struct Issuance {
    client: reqwest::Client,
    url: String,
    token: Option<String>,
}

impl Issuance {
    /// POSTs `body` to `path`; the answer's body when it is `want`.
    async fn post(&self, path: &str, body: Option<Value>, want: u16) -> Result<Value> {
        let mut req = self
            .client
            .post(format!("{}{path}", self.url))
            .header("idempotency-key", Uuid::new_v4().to_string());
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.with_context(|| format!("POST {path}"))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        if status != want {
            bail!("POST {path}: HTTP {status} {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn issue(&self, body: &Value) -> Result<String> {
        let l = self.post("/v1/licenses", Some(body.clone()), 201).await?;
        l["id"]
            .as_str()
            .map(str::to_string)
            .context("an issued license has an id")
    }

    /// A suspension or a reinstatement of `id`; its latency.
    async fn toggle(&self, id: &str, suspend: bool) -> Result<Duration> {
        let t = Instant::now();
        if suspend {
            let body = json!({"reason": "long-stream bench"});
            self.post(&format!("/v1/licenses/{id}/suspend"), Some(body), 200)
                .await?;
        } else {
            self.post(&format!("/v1/licenses/{id}/reinstate"), None, 200)
                .await?;
        }
        Ok(t.elapsed())
    }
}

fn stats(mut us: Vec<u64>) -> Value {
    us.sort_unstable();
    let mean = us.iter().sum::<u64>() as f64 / us.len().max(1) as f64;
    json!({
        "count": us.len(),
        "p50_ms": round(percentile(&us, 0.50) as f64 / 1000.0, 3),
        "p99_ms": round(percentile(&us, 0.99) as f64 / 1000.0, 3),
        "mean_ms": round(mean / 1000.0, 3),
    })
}

pub async fn run(o: &Opts) -> Result<Value> {
    let history: u64 = o.num("history", 10_000)?;
    let count: u64 = o.num("count", 200)?;
    let body: Value = serde_json::from_str(o.get("body").unwrap_or(BODY)).context("--body")?;
    if history % 2 != 0 {
        bail!("--history must be even (the long license ends active)");
    }
    let iss = Issuance {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()?,
        url: o
            .get("url")
            .context("--url")?
            .trim_end_matches('/')
            .to_string(),
        token: std::env::var("LOADGEN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
    };
    let long = iss.issue(&body).await?;
    let t0 = Instant::now();
    for i in 0..history {
        iss.toggle(&long, i % 2 == 0).await?;
    }
    let history_s = t0.elapsed().as_secs_f64();
    let (mut fresh_us, mut long_us) = (vec![], vec![]);
    for _ in 0..count {
        let fresh = iss.issue(&body).await?;
        fresh_us.push(iss.toggle(&fresh, true).await?.as_micros() as u64);
        long_us.push(iss.toggle(&long, true).await?.as_micros() as u64);
        iss.toggle(&long, false).await?;
    }
    let (fresh, long_stats) = (stats(fresh_us), stats(long_us));
    let ratio = |k: &str| {
        round(
            long_stats[k].as_f64().unwrap_or(0.0) / fresh[k].as_f64().unwrap_or(f64::NAN),
            3,
        )
    };
    Ok(json!({
        "history_events": history + 1,
        "history_seconds": round(history_s, 1),
        "history_commands_per_s": round(history as f64 / history_s, 1),
        "long_license_events_at_end": history + 1 + 2 * count,
        "fresh": fresh,
        "long": long_stats,
        "long_over_fresh_p50": ratio("p50_ms"),
        "long_over_fresh_mean": ratio("mean_ms"),
    }))
}
