//! Load generator and probes for `make bench` (see bench/run.sh and
//! docs/benchmarks.md). Every subcommand prints one JSON object on stdout;
//! diagnostics go to stderr.
//!
//!   (http-issue: `Authorization: Bearer $LOADGEN_TOKEN` when set; `--body`
//!   replaces the default IssueLicense body; each request has a fresh
//!   Idempotency-Key; `--correlation-id` sets X-Correlation-Id.)
//!   loadgen http-issue --url U --clients 32 --count 20000 [--warmup 1000]
//!       closed loop: `clients` workers, each sending the next request as soon
//!       as its previous one answered, until `count` measured requests.
//!       `--latencies-out FILE` also writes each successful request's
//!       latency (microseconds, one per line) to FILE.
//!   loadgen http-issue --url U --rate 500 --duration 20 [--max-inflight 512]
//!       open loop: request i is due at start + i/rate whatever the answers;
//!       latency is measured from the due time (no coordinated omission).
//!   loadgen activate --url U --keys-file F [--clients 32] [--count 5000] [--warmup 200]
//!       closed loop of POST /v1/activations, 201 expected: request i
//!       activates device i (four components `<device-prefix>-<part>-i`) on
//!       license key i mod K of the K keys of F (one per line; or `--keys
//!       k1,k2`). The warm-up takes devices 0..warmup, the measured run the
//!       next `count`.
//!   loadgen validate --url U --keys-file F --devices N [--clients 32] (--duration 20 | --count N)
//!       closed loop of POST /v1/validate {license_key, fingerprint} for the
//!       devices 0..N that `activate` made (same keys and prefix), 200 with
//!       code VALID expected.
//!   (activate and validate also print count, seconds, per_sec, p50_ms, p99_ms.)
//!   loadgen sign [--threads 2] [--duration 10] [--verify-duration 10]
//!       bare ES256 loop of libs/signing on `threads` threads: sign an
//!       activation-claims-sized payload (~600 bytes of JSON) for `duration`
//!       seconds, then verify one such JWS for `verify-duration`.
//!   loadgen relay-watch --db URL [--relay issuance] [--t0-ms EPOCH_MS] [--timeout 120]
//!       polls `relay_checkpoints` every 100 ms until it reaches the current
//!       max(global_position) of `events`.
//!   loadgen relay-trace --db URL --correlation-id C [--duration 30] [--interval-ms 10]
//!       samples `relay_checkpoints` (position, updated_at) for `duration`,
//!       then reports commit -> published lag of the events of correlation C:
//!       updated_at of the first checkpoint covering the event minus its
//!       recorded_at (same Postgres clock).
//!   loadgen cpu [name=pid | name=tree:pid ...]
//!       CPU ticks used so far by the given processes (`tree:`: with their
//!       children, exited ones included) and by the whole machine.
//!   loadgen grants-setup --url G --license L [--clients 1000] [--leases N] --clients-out F --leases-out F
//!       grant sync: registers license clients (POST /v1/clients as the
//!       admin) and checks out lease j (POST /v1/leases) with client j mod
//!       clients; writes their tokens and lease ids (src/grants.rs).
//!   loadgen sync-fanout --url G --clients-file F --license L --trigger-url U --trigger-bodies F [--rounds 3]
//!       grant sync: parks every client in a long-poll POST /v1/sync, makes
//!       one license change per round at issuance and times each client's
//!       answer from the change's HTTP 200 (src/grants.rs).
//!   loadgen long-stream --url ISS [--history 10000] [--count 200] [--body JSON]
//!       issuance: a suspension on a license with `history` past events
//!       beside the same on fresh licenses, interleaved (src/stream.rs).
//!   loadgen events --out-dir D [--licenses 100000] [--events 1000000] [--hot-license-events 10000]
//!       projector: a synthetic, contract-valid history of the four
//!       contexts' events as `<key>\t<json>` lines for Kafka's console
//!       producer, D/<context>.tsv; `--hot-file F`, `--ids-out F`
//!       (src/events.rs).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use sqlx::Connection;
use tokio::sync::Semaphore;
use uuid::Uuid;

mod events;
mod grants;
mod stream;

/// Default `IssueLicense` body (override with `--body`). The edition must be
/// one the product has: the seed catalog's integration-platform has
/// standard and enterprise.
const BODY: &str = r#"{"product":"integration-platform","edition":"enterprise","customer":"ACME Corp","kind":"formal","features":["data-access"]}"#;

fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        bail!("usage: loadgen http-issue|activate|validate|sign|relay-watch|relay-trace|cpu|grants-setup|sync-fanout|events|long-stream ... (see the source header)");
    }
    let cmd = args.remove(0);
    let opts = Opts::parse(&args)?;
    let rt = || -> Result<tokio::runtime::Runtime> {
        let threads: usize = opts.num("threads", 1)?;
        Ok(tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .enable_all()
            .build()?)
    };
    let out = match cmd.as_str() {
        "http-issue" => rt()?.block_on(http_issue(&opts))?,
        "activate" => rt()?.block_on(activate(&opts))?,
        "validate" => rt()?.block_on(validate(&opts))?,
        "relay-watch" => rt()?.block_on(relay_watch(&opts))?,
        "relay-trace" => rt()?.block_on(relay_trace(&opts))?,
        "grants-setup" => rt()?.block_on(grants::setup(&opts))?,
        "sync-fanout" => rt()?.block_on(grants::fanout(&opts))?,
        "events" => events::run(&opts)?,
        "long-stream" => rt()?.block_on(stream::run(&opts))?,
        "sign" => sign(&opts)?,
        "cpu" => cpu(&args)?,
        other => bail!("unknown subcommand {other:?}"),
    };
    println!("{out}");
    Ok(())
}

/// `--key value` pairs (and bare `name=pid` words for `cpu`).
struct Opts(BTreeMap<String, String>);

impl Opts {
    fn parse(args: &[String]) -> Result<Self> {
        let mut map = BTreeMap::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if let Some(k) = a.strip_prefix("--") {
                let v = it.next().ok_or_else(|| anyhow!("--{k} needs a value"))?;
                map.insert(k.to_string(), v.clone());
            }
        }
        Ok(Self(map))
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }
    fn req(&self, k: &str) -> Result<&str> {
        self.get(k).ok_or_else(|| anyhow!("--{k} is required"))
    }
    fn num<T: std::str::FromStr>(&self, k: &str, default: T) -> Result<T> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| anyhow!("--{k}: not a number: {v}")),
        }
    }
}

// ---------------------------------------------------------------- HTTP load

#[derive(Default)]
struct Tally {
    /// Latencies of successful requests, microseconds.
    ok_us: Vec<u64>,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.ok_us.extend(other.ok_us);
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

static SEEN_ERRORS: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Where a loop's requests go, what each one sends and what counts as a
/// success.
struct Target {
    client: reqwest::Client,
    url: String,
    token: Option<String>,
    correlation: Option<String>,
    /// The body of request number i.
    body: Box<dyn Fn(u64) -> String + Send + Sync>,
    /// The status of a success.
    status: u16,
    /// Also required of a success: this `code` in the JSON answer.
    code: Option<&'static str>,
}

impl Target {
    /// POSTs to `path` of `--url`, with `Authorization: Bearer $LOADGEN_TOKEN`
    /// when set and `--correlation-id` as X-Correlation-Id.
    fn new(
        o: &Opts,
        path: &str,
        status: u16,
        body: impl Fn(u64) -> String + Send + Sync + 'static,
    ) -> Result<Self> {
        let base = o.req("url")?.trim_end_matches('/');
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            client,
            url: format!("{base}{path}"),
            // The token is a secret: read from the environment, not argv.
            token: std::env::var("LOADGEN_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
            correlation: o.get("correlation-id").map(str::to_string),
            body: Box::new(body),
            status,
            code: None,
        })
    }

    /// Request i with a fresh Idempotency-Key; Err(kind) when not a success.
    async fn send(&self, i: u64) -> Result<(), String> {
        let mut req = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("idempotency-key", Uuid::new_v4().to_string())
            .body((self.body)(i));
        if let Some(c) = &self.correlation {
            req = req.header("x-correlation-id", c);
        }
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                // Read the body so the connection goes back to the pool.
                let body = resp.bytes().await.unwrap_or_default();
                if status != self.status {
                    return Err(failure(format!("http_{status}"), &body));
                }
                match self.code {
                    None => Ok(()),
                    Some(want) => {
                        let got = serde_json::from_slice::<Value>(&body)
                            .ok()
                            .and_then(|v| v.get("code").and_then(Value::as_str).map(str::to_string))
                            .unwrap_or_else(|| "none".into());
                        if got == want {
                            Ok(())
                        } else {
                            Err(failure(format!("code_{got}"), &body))
                        }
                    }
                }
            }
            Err(e) if e.is_timeout() => Err("timeout".into()),
            Err(e) if e.is_connect() => Err("connect".into()),
            Err(_) => Err("transport".into()),
        }
    }
}

/// The kind of a failed request; its first answer goes to stderr, for
/// diagnosis.
fn failure(kind: String, body: &[u8]) -> String {
    let mut seen = SEEN_ERRORS.lock().unwrap_or_else(|e| e.into_inner());
    if seen.insert(kind.clone()) {
        eprintln!("loadgen: {kind}: {}", String::from_utf8_lossy(body));
    }
    kind
}

async fn http_issue(o: &Opts) -> Result<Value> {
    let body = o.get("body").unwrap_or(BODY).to_string();
    let target = Arc::new(Target::new(o, "/v1/licenses", 201, move |_| body.clone())?);
    if o.get("rate").is_some() {
        open_loop(o, target).await
    } else {
        closed_loop(o, target).await
    }
}

// ------------------------------------------------------- activation load

/// The license keys of `--keys-file` (one per line) or `--keys k1,k2,...`.
fn license_keys(o: &Opts) -> Result<Arc<Vec<String>>> {
    let text = match (o.get("keys-file"), o.get("keys")) {
        (Some(f), _) => std::fs::read_to_string(f).with_context(|| format!("reading {f}"))?,
        (None, Some(k)) => k.replace(',', "\n"),
        (None, None) => bail!("--keys-file or --keys is required"),
    };
    let keys: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect();
    if keys.is_empty() {
        bail!("no license keys given");
    }
    Ok(Arc::new(keys))
}

/// `{license_key, fingerprint}` of device i: four components of its own
/// (no two devices share one), on license i mod K. The same for
/// `activate` and `validate`, so validate finds the seats activate made.
fn device_body(keys: &[String], prefix: &str, i: u64) -> String {
    let key = &keys[(i % keys.len() as u64) as usize];
    json!({
        "license_key": key,
        "fingerprint": {
            "machine_id": format!("{prefix}-machine-{i}"),
            "disk": format!("{prefix}-disk-{i}"),
            "board": format!("{prefix}-board-{i}"),
            "mac": format!("{prefix}-mac-{i}"),
        },
    })
    .to_string()
}

/// The figures every activation loop reports, flat.
fn flat(mut out: Value) -> Value {
    let ok = out["ok"].as_u64().unwrap_or(0);
    let secs = out["elapsed_s"].as_f64().unwrap_or(0.0);
    out["count"] = json!(ok);
    out["seconds"] = json!(secs);
    out["per_sec"] = json!(if secs > 0.0 {
        round(ok as f64 / secs, 1)
    } else {
        0.0
    });
    out["p50_ms"] = out["latency_ms"]["p50"].clone();
    out["p99_ms"] = out["latency_ms"]["p99"].clone();
    out
}

async fn activate(o: &Opts) -> Result<Value> {
    let keys = license_keys(o)?;
    let prefix = o.get("device-prefix").unwrap_or("bench").to_string();
    let k = keys.clone();
    let target = Target::new(o, "/v1/activations", 201, move |i| {
        device_body(&k, &prefix, i)
    })?;
    let mut out = flat(closed_loop(o, Arc::new(target)).await?);
    out["licenses"] = json!(keys.len());
    Ok(out)
}

async fn validate(o: &Opts) -> Result<Value> {
    let keys = license_keys(o)?;
    let prefix = o.get("device-prefix").unwrap_or("bench").to_string();
    let devices: u64 = o.num("devices", 0)?;
    if devices == 0 {
        bail!("--devices (how many devices activate made) is required");
    }
    let k = keys.clone();
    let mut target = Target::new(o, "/v1/validate", 200, move |i| {
        device_body(&k, &prefix, i % devices)
    })?;
    target.code = Some("VALID");
    let mut out = flat(closed_loop(o, Arc::new(target)).await?);
    out["rps"] = out["per_sec"].clone();
    out["devices"] = json!(devices);
    out["licenses"] = json!(keys.len());
    Ok(out)
}

async fn closed_loop(o: &Opts, target: Arc<Target>) -> Result<Value> {
    let clients: usize = o.num("clients", 32)?;
    // `--duration` without `--count`: as many requests as fit in it.
    let duration: Option<f64> = o
        .get("duration")
        .map(|_| o.num("duration", 0.0))
        .transpose()?;
    let count: u64 = match (o.get("count"), duration) {
        (None, Some(_)) => u64::MAX / 2,
        _ => o.num("count", 20_000)?,
    };
    let warmup: u64 = o.num("warmup", 0)?;
    if warmup > 0 {
        run_workers(&target, clients, 0..warmup, None).await;
    }
    let cpu0 = self_cpu_ticks();
    let started_at = chrono::Utc::now();
    let t0 = Instant::now();
    let until = duration.map(|d| t0 + Duration::from_secs_f64(d));
    let tally = run_workers(&target, clients, warmup..warmup + count, until).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let ok = tally.ok_us.len() as u64;
    if let Some(path) = o.get("latencies-out") {
        write_latencies(path, &tally.ok_us)?;
    }
    let mut out = summary(tally, elapsed);
    out["mode"] = json!("closed");
    out["clients"] = json!(clients);
    out["warmup"] = json!(warmup);
    out["requested"] = json!(if o.get("count").is_some() || duration.is_none() {
        Some(count)
    } else {
        None
    });
    out["duration_s"] = json!(duration);
    out["throughput_per_s"] = json!(round(ok as f64 / elapsed, 1));
    out["started_at"] = json!(started_at.to_rfc3339());
    out["loadgen_cpu_ticks"] = json!(self_cpu_ticks().saturating_sub(cpu0));
    Ok(out)
}

/// `clients` workers share a counter over the request numbers `range`;
/// none starts a request after `until`.
async fn run_workers(
    target: &Arc<Target>,
    clients: usize,
    range: std::ops::Range<u64>,
    until: Option<Instant>,
) -> Tally {
    let next = Arc::new(std::sync::atomic::AtomicU64::new(range.start));
    let end = range.end;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..clients.max(1) {
        let target = target.clone();
        let next = next.clone();
        set.spawn(async move {
            let mut t = Tally::default();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= end || until.is_some_and(|u| Instant::now() >= u) {
                    break;
                }
                let s = Instant::now();
                match target.send(i).await {
                    Ok(()) => t.ok_us.push(s.elapsed().as_micros() as u64),
                    Err(kind) => *t.errors.entry(kind).or_default() += 1,
                }
            }
            t
        });
    }
    let mut all = Tally::default();
    while let Some(r) = set.join_next().await {
        if let Ok(t) = r {
            all.merge(t);
        }
    }
    all
}

async fn open_loop(o: &Opts, target: Arc<Target>) -> Result<Value> {
    let rate: f64 = o.num("rate", 500.0)?;
    let duration: f64 = o.num("duration", 20.0)?;
    let max_inflight: usize = o.num("max-inflight", 512)?;
    if rate <= 0.0 || duration <= 0.0 {
        bail!("--rate and --duration must be positive");
    }
    let total = (rate * duration).round() as u64;
    let permits = Arc::new(Semaphore::new(max_inflight));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Result<u64, String>>();
    let cpu0 = self_cpu_ticks();
    let started_at = chrono::Utc::now();
    let t0 = Instant::now();
    let mut late_starts = 0u64;
    for i in 0..total {
        let due = t0 + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        // Saturated (every permit in flight): the wait counts in latency.
        let permit = permits.clone().acquire_owned().await?;
        if due.elapsed() > Duration::from_millis(5) {
            late_starts += 1;
        }
        let target = target.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let r = target
                .send(i)
                .await
                .map(|()| due.elapsed().as_micros() as u64);
            drop(permit);
            let _ = tx.send(r);
        });
    }
    drop(tx);
    let mut tally = Tally::default();
    while let Some(r) = rx.recv().await {
        match r {
            Ok(us) => tally.ok_us.push(us),
            Err(kind) => *tally.errors.entry(kind).or_default() += 1,
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let ok = tally.ok_us.len() as u64;
    let mut out = summary(tally, elapsed);
    out["mode"] = json!("open");
    out["target_rate_per_s"] = json!(rate);
    out["duration_s"] = json!(duration);
    out["requested"] = json!(total);
    out["achieved_rate_per_s"] = json!(round(ok as f64 / elapsed, 1));
    out["late_starts"] = json!(late_starts);
    out["max_inflight"] = json!(max_inflight);
    out["started_at"] = json!(started_at.to_rfc3339());
    out["loadgen_cpu_ticks"] = json!(self_cpu_ticks().saturating_sub(cpu0));
    Ok(out)
}

/// One latency (microseconds) per line, for pooling rounds (`--latencies-out`).
fn write_latencies(path: &str, us: &[u64]) -> Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {path}"))?,
    );
    for v in us {
        writeln!(f, "{v}")?;
    }
    f.flush()?;
    Ok(())
}

fn summary(mut t: Tally, elapsed: f64) -> Value {
    t.ok_us.sort_unstable();
    let ms = |q: f64| round(percentile(&t.ok_us, q) as f64 / 1000.0, 2);
    let mean = if t.ok_us.is_empty() {
        0.0
    } else {
        t.ok_us.iter().sum::<u64>() as f64 / t.ok_us.len() as f64 / 1000.0
    };
    json!({
        "ok": t.ok_us.len(),
        "errors": t.errors.values().sum::<u64>(),
        "error_kinds": t.errors,
        "elapsed_s": round(elapsed, 3),
        "latency_ms": {
            "p50": ms(0.50), "p90": ms(0.90), "p99": ms(0.99), "p999": ms(0.999),
            "max": ms(1.0), "mean": round(mean, 2),
        },
    })
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

// --------------------------------------------------------------- signing

/// An activation file's claims as the service signs them for a formal
/// license without expiry (two features, the fingerprint digest, the
/// granting event's hash): about 600 bytes of JSON (bench/activation.sh
/// records the size of a real one).
fn claims_payload() -> Value {
    json!({
        "typ": "activation",
        "iss": "licensing.activation",
        "activation_id": "0195f3a2-7c4e-7d3b-9a41-2f6c8e1d5b70",
        "license_id": "0195f3a1-0b2c-7e4d-8f5a-6b7c8d9e0f12",
        "product": "integration-platform",
        "edition": "enterprise",
        "kind": "formal",
        "features": [
            {"code": "datasource-mgmt"},
            {"code": "data-access"},
        ],
        "fingerprint": "9f2c4e6a8b0d1f3e5a7c9b1d3f5e7a9c0b2d4f6e8a1c3e5b7d9f0a2c4e6b8d0f",
        "iat": 1_774_000_000,
        "nbf": 1_774_000_000,
        "event": {
            "aggregate_type": "LicenseActivations",
            "aggregate_id": "0195f3a1-0b2c-7e4d-8f5a-6b7c8d9e0f12",
            "sequence": 42,
            "hash": "3b8e1f0c6d2a4e9b7f5c1a3d8e0b6f2c4a9d7e1b3f5c8a0e2d4b6f9c1e3a5d7b",
        },
    })
}

/// Runs `op` on `threads` threads for `secs` seconds; per thread the
/// operations done and the seconds they took.
fn spin(
    threads: usize,
    secs: f64,
    op: &(dyn Fn() -> Result<(), signing::SigningError> + Sync),
) -> Result<Vec<(u64, f64)>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(move || -> Result<(u64, f64)> {
                    let t0 = Instant::now();
                    let until = t0 + Duration::from_secs_f64(secs);
                    let mut n = 0u64;
                    while Instant::now() < until {
                        op().map_err(|e| anyhow!("signing: {e}"))?;
                        n += 1;
                    }
                    Ok((n, t0.elapsed().as_secs_f64()))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow!("a signing thread panicked"))?)
            .collect()
    })
}

/// Total and per-thread rates of a `spin`.
fn rates(runs: &[(u64, f64)]) -> Value {
    let per_thread: Vec<f64> = runs
        .iter()
        .map(|(n, s)| round(*n as f64 / s.max(1e-9), 1))
        .collect();
    let total: f64 = per_thread.iter().sum();
    let ops: u64 = runs.iter().map(|(n, _)| n).sum();
    json!({
        "ops": ops,
        "per_sec": round(total, 1),
        "per_thread_per_sec": per_thread,
        "mean_per_thread_per_sec": round(total / per_thread.len().max(1) as f64, 1),
        // Wall time of one operation on one thread.
        "us_per_op": round(per_thread.len() as f64 / total.max(1e-9) * 1e6, 2),
    })
}

fn sign(o: &Opts) -> Result<Value> {
    let threads: usize = o.num("threads", 2)?;
    let secs: f64 = o.num("duration", 10.0)?;
    let verify_secs: f64 = o.num("verify-duration", secs)?;
    let ring = signing::KeyRing::generate("bench").map_err(|e| anyhow!("key: {e}"))?;
    let payload = claims_payload();
    let jws = ring.sign(&payload).map_err(|e| anyhow!("sign: {e}"))?;
    let cpu0 = self_cpu_ticks();
    let signs = spin(threads, secs, &|| ring.sign(&payload).map(drop))?;
    let cpu1 = self_cpu_ticks();
    let verifies = spin(threads, verify_secs, &|| ring.verify(&jws).map(drop))?;
    let cpu2 = self_cpu_ticks();
    let (s, v) = (rates(&signs), rates(&verifies));
    Ok(json!({
        "threads": threads,
        "payload_bytes": serde_json::to_vec(&payload)?.len(),
        "jws_bytes": jws.len(),
        "sign_seconds": secs,
        "verify_seconds": verify_secs,
        "signs_per_sec": s["per_sec"],
        "signs_per_sec_per_thread": s["mean_per_thread_per_sec"],
        "verify_per_sec": v["per_sec"],
        "verify_per_sec_per_thread": v["mean_per_thread_per_sec"],
        "sign": s,
        "verify": v,
        // Below threads x seconds x CLK_TCK: the threads did not get whole cores.
        "cpu_ticks": {"sign": cpu1.saturating_sub(cpu0), "verify": cpu2.saturating_sub(cpu1)},
    }))
}

// -------------------------------------------------------------- relay watch

async fn relay_watch(o: &Opts) -> Result<Value> {
    let url = o.req("db")?;
    let relay = o.get("relay").unwrap_or("issuance").to_string();
    let timeout = Duration::from_secs_f64(o.num("timeout", 120.0)?);
    let interval = Duration::from_millis(o.num("interval-ms", 100)?);
    let now_ms = chrono::Utc::now().timestamp_millis();
    let t0_ms: i64 = o.num("t0-ms", now_ms)?;
    // Instant corresponding to t0 (the moment the service was spawned).
    let offset = Duration::from_millis(u64::try_from(now_ms - t0_ms).unwrap_or(0));
    let t0 = Instant::now()
        .checked_sub(offset)
        .unwrap_or_else(Instant::now);
    let mut conn = sqlx::PgConnection::connect(url).await.context("connect")?;
    let (target, events): (i64, i64) =
        sqlx::query_as("SELECT coalesce(max(global_position), 0), count(*) FROM events")
            .fetch_one(&mut conn)
            .await?;
    let start_pos = checkpoint(&mut conn, &relay).await?;
    let mut first_move: Option<f64> = None;
    let mut done: Option<f64> = None;
    let mut last = start_pos;
    let mut samples = Vec::new();
    let deadline = Instant::now() + timeout;
    let mut tick = tokio::time::interval(interval);
    while Instant::now() < deadline {
        tick.tick().await;
        let pos = checkpoint(&mut conn, &relay).await?;
        let at = t0.elapsed().as_secs_f64();
        if pos != last {
            samples.push(json!([round(at, 3), pos]));
            if first_move.is_none() {
                first_move = Some(at);
            }
            last = pos;
        }
        if pos >= target {
            done = Some(at);
            break;
        }
    }
    let backlog = target - start_pos;
    let rate = |secs: Option<f64>| {
        secs.filter(|s| *s > 0.0)
            .map(|s| round(backlog as f64 / s, 0))
    };
    let steady = match (first_move, done) {
        // The first observed move already covers one batch: count from the
        // position seen then, over the time after it.
        (Some(f), Some(d)) if d > f => {
            let at_first = samples
                .first()
                .and_then(|s| s.get(1))
                .and_then(Value::as_i64)
                .unwrap_or(start_pos);
            Some(round((target - at_first) as f64 / (d - f), 0))
        }
        _ => None,
    };
    Ok(json!({
        "relay": relay,
        "events_in_table": events,
        "start_position": start_pos,
        "target_position": target,
        "backlog": backlog,
        "caught_up": done.is_some(),
        "first_move_s": first_move.map(|v| round(v, 3)),
        "caught_up_s": done.map(|v| round(v, 3)),
        "events_per_s_from_spawn": rate(done),
        "events_per_s_after_first_batch": steady,
        "poll_interval_ms": interval.as_millis() as u64,
        "samples": samples,
    }))
}

async fn relay_trace(o: &Opts) -> Result<Value> {
    let url = o.req("db")?;
    let relay = o.get("relay").unwrap_or("issuance").to_string();
    let correlation = o.req("correlation-id")?.to_string();
    let duration = Duration::from_secs_f64(o.num("duration", 30.0)?);
    let interval = Duration::from_millis(o.num("interval-ms", 10)?);
    let mut conn = sqlx::PgConnection::connect(url).await.context("connect")?;
    let mut seen: Vec<(i64, chrono::DateTime<chrono::Utc>)> = Vec::new();
    let deadline = Instant::now() + duration;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while Instant::now() < deadline {
        tick.tick().await;
        let row: Option<(i64, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
            "SELECT global_position, updated_at FROM relay_checkpoints WHERE relay = $1",
        )
        .bind(&relay)
        .fetch_optional(&mut conn)
        .await?;
        if let Some(r) = row {
            if seen.last().is_none_or(|l| l.0 != r.0) {
                seen.push(r);
            }
        }
    }
    let events: Vec<(i64, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT global_position, recorded_at FROM events \
         WHERE metadata->>'correlation_id' = $1 ORDER BY global_position",
    )
    .bind(&correlation)
    .fetch_all(&mut conn)
    .await?;
    let mut lags: Vec<u64> = Vec::with_capacity(events.len());
    let mut uncovered = 0u64;
    let mut i = 0;
    for (pos, recorded) in &events {
        while i < seen.len() && seen[i].0 < *pos {
            i += 1;
        }
        match seen.get(i) {
            Some((_, at)) => lags.push(
                u64::try_from((*at - *recorded).num_microseconds().unwrap_or(0)).unwrap_or(0),
            ),
            None => uncovered += 1,
        }
    }
    lags.sort_unstable();
    let ms = |q: f64| round(percentile(&lags, q) as f64 / 1000.0, 2);
    let batches = seen.len();
    Ok(json!({
        "relay": relay,
        "events": events.len(),
        "uncovered": uncovered,
        "checkpoint_updates_seen": batches,
        "events_per_update": if batches > 0 { round(events.len() as f64 / batches as f64, 1) } else { 0.0 },
        "poll_interval_ms": interval.as_millis() as u64,
        "commit_to_published_ms": { "p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "max": ms(1.0) },
    }))
}

async fn checkpoint(conn: &mut sqlx::PgConnection, relay: &str) -> Result<i64> {
    let v: Option<i64> =
        sqlx::query_scalar("SELECT global_position FROM relay_checkpoints WHERE relay = $1")
            .bind(relay)
            .fetch_optional(conn)
            .await?;
    Ok(v.unwrap_or(0))
}

// ----------------------------------------------------------------------- cpu

/// utime, stime, cutime, cstime of a process, in clock ticks.
fn proc_times(pid: u32) -> Option<(u32, String, [u64; 4])> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    // rest[0] is field 3 (state): ppid is field 4, utime..cstime fields 14..17.
    let ppid = rest.get(1)?.parse().ok()?;
    let mut t = [0u64; 4];
    for (i, slot) in t.iter_mut().enumerate() {
        *slot = rest.get(11 + i)?.parse().ok()?;
    }
    Some((ppid, comm, t))
}

fn self_cpu_ticks() -> u64 {
    proc_times(std::process::id())
        .map(|(_, _, t)| t[0] + t[1])
        .unwrap_or(0)
}

fn cpu(args: &[String]) -> Result<Value> {
    let mut out = serde_json::Map::new();
    let procs: Vec<(u32, u32, [u64; 4])> = std::fs::read_dir("/proc")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| proc_times(pid).map(|(pp, _, t)| (pid, pp, t)))
        .collect();
    for a in args {
        let Some((name, spec)) = a.split_once('=') else {
            continue;
        };
        // `tree:PID`: the process, its live children, and the children it
        // has reaped (how exited PostgreSQL backends are still counted).
        let (tree, pid) = match spec.strip_prefix("tree:") {
            Some(p) => (true, p),
            None => (false, spec),
        };
        let pid: u32 = pid.parse().with_context(|| format!("bad pid in {a}"))?;
        let mut ticks = 0;
        for (p, pp, t) in &procs {
            if *p == pid {
                ticks += t[0] + t[1] + if tree { t[2] + t[3] } else { 0 };
            } else if tree && *pp == pid {
                ticks += t[0] + t[1];
            }
        }
        out.insert(name.to_string(), json!(ticks));
    }
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().unwrap_or_default();
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: busy excludes steal
    // (time the hypervisor gave to someone else), reported on its own.
    let total: u64 = f.iter().take(8).sum();
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    let steal = f.get(7).copied().unwrap_or(0);
    out.insert(
        "machine_busy".into(),
        json!(total.saturating_sub(idle + steal)),
    );
    out.insert("machine_steal".into(), json!(steal));
    out.insert("machine_total".into(), json!(total));
    Ok(Value::Object(out))
}
