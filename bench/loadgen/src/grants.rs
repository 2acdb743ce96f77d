//! Grant-sync probes of bench/grants.sh: `grants-setup` registers license
//! clients and checks out their leases; `sync-fanout` parks every client in
//! a long-poll, makes one license change at issuance and records when each
//! client's answer with that change arrives.
//!
//! The long-polls use a minimal HTTP/1.1 client on raw TCP (one connection
//! per request, `Connection: close`): the request is known to be written
//! when the write returns, which tells when all of them are out, and an
//! answer is timestamped when its last byte is read.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use sqlx::Connection;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::{percentile, round, Opts};

fn admin_token() -> Result<String> {
    std::env::var("LOADGEN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| anyhow!("LOADGEN_TOKEN (the admin key) is required"))
}

fn http_client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .build()?)
}

/// POST `body` as JSON with a bearer token and a fresh Idempotency-Key; the
/// status and the parsed answer.
async fn post(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: &Value,
) -> Result<(u16, Value)> {
    let resp = http
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("idempotency-key", Uuid::new_v4().to_string())
        .body(body.to_string())
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap_or_default();
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            Value::String(String::from_utf8_lossy(&bytes).chars().take(300).collect())
        }),
    ))
}

/// Runs `f(0..n)` with at most `conc` at once; the results in order and
/// each call's latency (microseconds). The first error aborts.
async fn limited<T, F, Fut>(n: usize, conc: usize, f: F) -> Result<(Vec<T>, Vec<u64>)>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(conc.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let permits = permits.clone();
        let fut = f(i);
        set.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let t = Instant::now();
            let v = fut.await?;
            Ok::<_, anyhow::Error>((i, v, t.elapsed().as_micros() as u64))
        });
    }
    let mut out: Vec<(usize, T, u64)> = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        out.push(r.map_err(|e| anyhow!("task: {e}"))??);
    }
    out.sort_by_key(|(i, _, _)| *i);
    let lat = out.iter().map(|(_, _, us)| *us).collect();
    Ok((out.into_iter().map(|(_, v, _)| v).collect(), lat))
}

/// Count, seconds, rate and latency of a set-up step.
fn step(us: &mut [u64], secs: f64) -> Value {
    us.sort_unstable();
    let ms = |q: f64| round(percentile(us, q) as f64 / 1000.0, 2);
    json!({
        "count": us.len(), "seconds": round(secs, 3),
        "per_s": if secs > 0.0 { round(us.len() as f64 / secs, 1) } else { 0.0 },
        "p50_ms": ms(0.5), "p99_ms": ms(0.99), "max_ms": ms(1.0),
    })
}

/// `loadgen grants-setup --url G --license L [--clients 1000] [--leases N]
/// [--feature data-access] [--concurrency 16] --clients-out F --leases-out F`:
/// registers the clients (as the admin), then checks out lease j with
/// client j mod clients. Writes `token<TAB>client_id` per client and
/// `lease_id<TAB>token<TAB>client_id` per lease.
pub async fn setup(o: &Opts) -> Result<Value> {
    let base = o.req("url")?.trim_end_matches('/').to_string();
    let license: Uuid = o.req("license")?.parse().context("--license")?;
    let n_clients: usize = o.num("clients", 1000)?;
    let n_leases: usize = o.num("leases", n_clients)?;
    let feature = o.get("feature").unwrap_or("data-access").to_string();
    let conc: usize = o.num("concurrency", 16)?;
    let clients_out = o.req("clients-out")?;
    let leases_out = o.req("leases-out")?;
    if n_clients == 0 {
        bail!("--clients must be at least 1");
    }
    let admin = admin_token()?;
    let http = http_client()?;

    let t0 = Instant::now();
    let (clients, mut reg_us) = limited(n_clients, conc, |i| {
        let (http, url, admin) = (http.clone(), format!("{base}/v1/clients"), admin.clone());
        async move {
            let body = json!({"name": format!("bench-client-{i}"), "licenses": [license]});
            let (s, b) = post(&http, &url, &admin, &body).await?;
            if s != 201 {
                bail!("registering client {i}: HTTP {s} {b}");
            }
            let token = b["token"]
                .as_str()
                .ok_or_else(|| anyhow!("no token: {b}"))?;
            let id = b["client_id"].as_str().unwrap_or_default();
            Ok((token.to_string(), id.to_string()))
        }
    })
    .await?;
    let reg_s = t0.elapsed().as_secs_f64();
    std::fs::write(
        clients_out,
        clients
            .iter()
            .map(|(t, id)| format!("{t}\t{id}\n"))
            .collect::<String>(),
    )
    .with_context(|| format!("writing {clients_out}"))?;

    let clients = Arc::new(clients);
    let t1 = Instant::now();
    let (leases, mut out_us) = limited(n_leases, conc, |j| {
        let (http, url, clients) = (http.clone(), format!("{base}/v1/leases"), clients.clone());
        let feature = feature.clone();
        async move {
            let (token, _) = &clients[j % clients.len()];
            let body = json!({"license_id": license, "feature": feature});
            let (s, b) = post(&http, &url, token, &body).await?;
            if s != 201 {
                bail!("checking out lease {j}: HTTP {s} {b}");
            }
            let id = b["lease_id"]
                .as_str()
                .ok_or_else(|| anyhow!("no lease_id: {b}"))?;
            Ok((id.to_string(), b["ttl_secs"].as_u64().unwrap_or(0)))
        }
    })
    .await?;
    let out_s = t1.elapsed().as_secs_f64();
    std::fs::write(
        leases_out,
        leases
            .iter()
            .enumerate()
            .map(|(j, (id, _))| {
                let (t, c) = &clients[j % clients.len()];
                format!("{id}\t{t}\t{c}\n")
            })
            .collect::<String>(),
    )
    .with_context(|| format!("writing {leases_out}"))?;
    Ok(json!({
        "license_id": license,
        "clients": clients.len(),
        "leases": leases.len(),
        "leases_per_client": round(leases.len() as f64 / clients.len() as f64, 2),
        "lease_ttl_secs": leases.first().map(|l| l.1),
        "concurrency": conc,
        "register": step(&mut reg_us, reg_s),
        "checkout": step(&mut out_us, out_s),
    }))
}

// ------------------------------------------------------------ raw HTTP/1.1

/// `host:port` of an `http://host:port[/...]` URL.
fn authority(url: &str) -> Result<String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("only http:// URLs: {url}"))?;
    Ok(rest.split('/').next().unwrap_or(rest).to_string())
}

/// Connects and writes one POST; the connection, to read the answer from.
async fn send(addr: &str, path: &str, token: &str, body: &str) -> Result<BufReader<TcpStream>> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    stream.set_nodelay(true)?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut r = BufReader::new(stream);
    let w = r.get_mut();
    w.write_all(head.as_bytes()).await?;
    w.write_all(body.as_bytes()).await?;
    w.flush().await?;
    Ok(r)
}

/// Status and body of one HTTP/1.1 answer (Content-Length, chunked, or to EOF).
async fn read_answer<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<(u16, Vec<u8>)> {
    let mut line = String::new();
    if r.read_line(&mut line).await? == 0 {
        bail!("connection closed before the status line");
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {line:?}"))?;
    let (mut len, mut chunked) = (None, false);
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            bail!("connection closed in the headers");
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                len = Some(v.parse::<usize>().context("content-length")?);
            } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line).await?;
            let hex = line.trim().split(';').next().unwrap_or("0");
            let size = usize::from_str_radix(hex, 16).context("chunk size")?;
            if size == 0 {
                loop {
                    line.clear();
                    if r.read_line(&mut line).await? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..]).await?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf).await?;
        }
    } else if let Some(n) = len {
        body.resize(n, 0);
        r.read_exact(&mut body).await?;
    } else {
        r.read_to_end(&mut body).await?;
    }
    Ok((status, body))
}

// ------------------------------------------------------------ fan-out

/// Signed milliseconds from `t0` to `t`, two decimals.
fn ms_since(t: Instant, t0: Instant) -> f64 {
    let us = match t.checked_duration_since(t0) {
        Some(d) => d.as_micros() as i64,
        None => -(t0.duration_since(t).as_micros() as i64),
    };
    round(us as f64 / 1000.0, 2)
}

/// Nearest-rank percentiles of signed milliseconds.
fn dist(v: &mut [f64]) -> Value {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return Value::Null;
    }
    let q = |q: f64| {
        let rank = (q * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    };
    json!({
        "n": v.len(), "min": v[0], "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": v[v.len() - 1],
        "mean": round(v.iter().sum::<f64>() / v.len() as f64, 2),
    })
}

/// What one client's answer in a round was.
struct Answer {
    arrived: Instant,
    status: u16,
    body: Vec<u8>,
}

/// CPU ticks of the `--cpu` processes and of this one (`loadgen`) now,
/// with the wall clock (`machine_wall_ms`, epoch ms), written to
/// `{prefix}-r{round}-{k}.json` (the shape of `loadgen cpu`).
fn cpu_point(specs: &[String], prefix: Option<&str>, round: usize, k: u32) -> Result<()> {
    let Some(prefix) = prefix else { return Ok(()) };
    let mut specs = specs.to_vec();
    specs.push(format!("loadgen={}", std::process::id()));
    let mut v = crate::cpu(&specs)?;
    v["machine_wall_ms"] = json!(chrono::Utc::now().timestamp_millis());
    std::fs::write(format!("{prefix}-r{round}-{k}.json"), v.to_string())?;
    Ok(())
}

/// Committed transactions of a database so far (backends flush these
/// counters about once a second: good over seconds, not milliseconds).
async fn xacts(db: &mut Option<sqlx::PgConnection>) -> Result<Option<(Instant, i64)>> {
    let Some(c) = db.as_mut() else {
        return Ok(None);
    };
    let v: i64 = sqlx::query_scalar(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(c)
    .await?;
    Ok(Some((Instant::now(), v)))
}

/// Transactions per second between two `xacts` readings.
fn xact_rate(a: Option<(Instant, i64)>, b: Option<(Instant, i64)>) -> Value {
    match (a, b) {
        (Some((ta, a)), Some((tb, b))) if tb > ta => {
            json!(round(
                (b - a) as f64 / tb.duration_since(ta).as_secs_f64(),
                0
            ))
        }
        _ => Value::Null,
    }
}

/// When the change got through the pipeline, sampled every `every`:
/// issuance's relay checkpoint (published to Kafka), and the change-feed row
/// at grant sync (stored: committed by the consumer; servable: below every
/// open transaction's xmin, so a sync may return it).
struct Trace {
    checkpoints: Vec<(Instant, i64)>,
    stored: Option<Instant>,
    servable: Option<Instant>,
}

async fn trace(
    iss_db: Option<String>,
    gs_db: Option<String>,
    license: Uuid,
    every: Duration,
    event_pos: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
    ready: tokio::sync::oneshot::Sender<()>,
) -> Result<Trace> {
    let mut iss = match &iss_db {
        Some(u) => Some(
            sqlx::PgConnection::connect(u)
                .await
                .context("issuance db")?,
        ),
        None => None,
    };
    let mut gs = match &gs_db {
        Some(u) => Some(
            sqlx::PgConnection::connect(u)
                .await
                .context("grant-sync db")?,
        ),
        None => None,
    };
    let base: i64 = match gs.as_mut() {
        Some(c) => {
            sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM sync_changes")
                .fetch_one(c)
                .await?
        }
        None => 0,
    };
    let _ = ready.send(());
    let mut t = Trace {
        checkpoints: Vec::new(),
        stored: None,
        servable: None,
    };
    let started = Instant::now();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        if let Some(c) = iss.as_mut() {
            let p: Option<i64> = sqlx::query_scalar(
                "SELECT global_position FROM relay_checkpoints WHERE relay = 'issuance'",
            )
            .fetch_optional(&mut *c)
            .await?;
            let now = Instant::now();
            if let Some(p) = p {
                if t.checkpoints.last().is_none_or(|l| l.1 != p) {
                    t.checkpoints.push((now, p));
                }
            }
        }
        if let (Some(c), None) = (gs.as_mut(), t.servable) {
            let row: Option<(i64, bool)> = sqlx::query_as(
                "SELECT position, tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
                 FROM sync_changes WHERE license_id = $1 AND position > $2 \
                 ORDER BY position LIMIT 1",
            )
            .bind(license)
            .bind(base)
            .fetch_optional(&mut *c)
            .await?;
            let now = Instant::now();
            if let Some((_, servable)) = row {
                t.stored.get_or_insert(now);
                if servable {
                    t.servable = Some(now);
                }
            }
        }
        let pos = event_pos.load(Ordering::Relaxed);
        let published =
            iss.is_none() || (pos > 0 && t.checkpoints.last().is_some_and(|l| l.1 >= pos));
        let stored = gs.is_none() || t.servable.is_some();
        if (stop.load(Ordering::Relaxed) && published && stored)
            || started.elapsed() > Duration::from_secs(60)
        {
            break;
        }
    }
    Ok(t)
}

/// `loadgen sync-fanout --url G --clients-file F --license L --trigger-url U
/// --trigger-bodies F [--rounds 3] [--wait-ms 30000] [--park-ms 5000]
/// [--gap-ms 1000] [--connect-concurrency 64] [--prime-concurrency 16]
/// [--issuance-db URL] [--grants-db URL] [--sample-ms 5]
/// [--cpu "name=pid ..."] [--cpu-out-prefix P] [--arrivals-out F]`
///
/// Each client (first column of the clients file) syncs once without a
/// cursor. Then, per round: every client opens a long-poll `POST /v1/sync
/// {cursor, wait_ms}`; once all are written, `park-ms` passes (CPU sampled
/// over its last four fifths: what parked clients cost); then line `round` of the trigger
/// bodies is POSTed to the trigger URL as the admin (200 expected), and
/// each client's arrival is timed from that 200: its answer must carry a
/// change of the license. The next round starts `gap-ms` after the last
/// answer, from the new cursors.
pub async fn fanout(o: &Opts) -> Result<Value> {
    let addr = Arc::new(authority(o.req("url")?)?);
    let license: Uuid = o.req("license")?.parse().context("--license")?;
    let file = o.req("clients-file")?;
    let mut tokens: Vec<String> = std::fs::read_to_string(file)
        .with_context(|| format!("reading {file}"))?
        .lines()
        .filter_map(|l| l.split('\t').next())
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(n) = o.get("clients") {
        tokens.truncate(n.parse().context("--clients")?);
    }
    let n = tokens.len();
    if n == 0 {
        bail!("no client tokens in {file}");
    }
    let tokens = Arc::new(tokens);
    let rounds: usize = o.num("rounds", 3)?;
    let wait_ms: u64 = o.num("wait-ms", 30_000)?;
    let park = Duration::from_millis(o.num("park-ms", 5_000)?);
    let gap = Duration::from_millis(o.num("gap-ms", 1_000)?);
    let conc: usize = o.num("connect-concurrency", 64)?;
    let prime_conc: usize = o.num("prime-concurrency", 16)?;
    let every = Duration::from_millis(o.num("sample-ms", 5)?.max(1));
    let trigger_url = o.req("trigger-url")?.to_string();
    let bodies_file = o.req("trigger-bodies")?;
    let bodies: Vec<Value> = std::fs::read_to_string(bodies_file)
        .with_context(|| format!("reading {bodies_file}"))?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).context("a trigger body is not JSON"))
        .collect::<Result<_>>()?;
    if bodies.len() < rounds {
        bail!("{} trigger bodies for {rounds} rounds", bodies.len());
    }
    let cpu_specs: Vec<String> = o
        .get("cpu")
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let cpu_prefix = o.get("cpu-out-prefix");
    let admin = admin_token()?;
    let http = http_client()?;
    let mut stats_db = match o.get("grants-db") {
        Some(u) => Some(
            sqlx::PgConnection::connect(u)
                .await
                .context("grant-sync db")?,
        ),
        None => None,
    };

    // First syncs: the cursor each client long-polls from.
    let t0 = Instant::now();
    let (mut cursors, mut prime_us) = limited(n, prime_conc, |i| {
        let (addr, tokens) = (addr.clone(), tokens.clone());
        async move {
            let mut r = send(&addr, "/v1/sync", &tokens[i], "{}").await?;
            let (s, body) = read_answer(&mut r).await?;
            let v: Value = serde_json::from_slice(&body).unwrap_or_default();
            if s != 200 {
                bail!("first sync of client {i}: HTTP {s} {v}");
            }
            v["next_cursor"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| anyhow!("no next_cursor: {v}"))
        }
    })
    .await?;
    let prime = step(&mut prime_us, t0.elapsed().as_secs_f64());

    let mut out_rounds = Vec::new();
    let mut pooled: Vec<f64> = Vec::new();
    let mut arrivals = String::from("round\tclient\tarrival_ms\tserver_time_ms\n");
    for (round_no, change) in bodies.iter().enumerate().take(rounds) {
        if round_no > 0 {
            tokio::time::sleep(gap).await;
        }
        // Park every client.
        let (wtx, mut wrx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let answered = Arc::new(AtomicUsize::new(0));
        let permits = Arc::new(Semaphore::new(conc.max(1)));
        let round_t0 = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for (i, cursor) in cursors.iter().enumerate() {
            let body = json!({"cursor": cursor, "wait_ms": wait_ms}).to_string();
            let (addr, tokens, wtx, answered, permits) = (
                addr.clone(),
                tokens.clone(),
                wtx.clone(),
                answered.clone(),
                permits.clone(),
            );
            set.spawn(async move {
                let r = async {
                    let permit = permits.acquire_owned().await?;
                    let mut conn = send(&addr, "/v1/sync", &tokens[i], &body).await?;
                    drop(permit);
                    let _ = wtx.send(());
                    let (status, body) = read_answer(&mut conn).await?;
                    let arrived = Instant::now();
                    answered.fetch_add(1, Ordering::Relaxed);
                    Ok::<_, anyhow::Error>(Answer {
                        arrived,
                        status,
                        body,
                    })
                }
                .await;
                (i, r)
            });
        }
        drop(wtx);
        let mut written = 0usize;
        let limit = Instant::now() + Duration::from_secs(60);
        while written < n {
            match tokio::time::timeout_at(limit.into(), wrx.recv()).await {
                Ok(Some(())) => written += 1,
                _ => bail!("round {round_no}: only {written} of {n} long-polls could be sent"),
            }
        }
        let all_written_ms = ms_since(Instant::now(), round_t0);
        // The parked state is sampled after the first fifth of the park
        // time (at least 1 s): the requests' own start-up work is done and
        // its database counters flushed by then.
        let park_t0 = Instant::now();
        let settle = (park / 5).max(Duration::from_secs(1)).min(park);
        tokio::time::sleep(settle).await;
        cpu_point(&cpu_specs, cpu_prefix, round_no, 0)?;
        let x0 = xacts(&mut stats_db).await?;
        tokio::time::sleep(park - settle).await;
        let early = answered.load(Ordering::Relaxed);
        let park_s = park_t0.elapsed().as_secs_f64();

        // The pipeline trace, then the change.
        let event_pos = Arc::new(AtomicI64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let tracer = tokio::spawn(trace(
            o.get("issuance-db").map(str::to_string),
            o.get("grants-db").map(str::to_string),
            license,
            every,
            event_pos.clone(),
            stop.clone(),
            ready_tx,
        ));
        let _ = ready_rx.await;
        let x1 = xacts(&mut stats_db).await?;
        cpu_point(&cpu_specs, cpu_prefix, round_no, 1)?;
        let sent = Instant::now();
        let (s, b) = post(&http, &trigger_url, &admin, change).await?;
        let t200 = Instant::now();
        let t200_utc = chrono::Utc::now();
        if s != 200 {
            bail!("round {round_no}: the change answered HTTP {s} {b}");
        }
        if let Some(u) = o.get("issuance-db") {
            let mut c = sqlx::PgConnection::connect(u).await?;
            let p: Option<i64> = sqlx::query_scalar(
                "SELECT max(global_position) FROM events WHERE aggregate_id = $1",
            )
            .bind(license.to_string())
            .fetch_one(&mut c)
            .await?;
            event_pos.store(p.unwrap_or(0), Ordering::Relaxed);
        }

        // Every answer.
        let mut answers: Vec<(usize, Result<Answer>)> = Vec::with_capacity(n);
        let limit = Instant::now() + Duration::from_millis(wait_ms) + Duration::from_secs(20);
        while let Ok(Some(r)) = tokio::time::timeout_at(limit.into(), set.join_next()).await {
            answers.push(r.map_err(|e| anyhow!("task: {e}"))?);
        }
        let last_seen = Instant::now();
        cpu_point(&cpu_specs, cpu_prefix, round_no, 2)?;
        let delivery_s = last_seen.duration_since(t200).as_secs_f64();
        set.abort_all();
        stop.store(true, Ordering::Relaxed);
        let tr = tracer.await.map_err(|e| anyhow!("trace task: {e}"))??;

        let mut errors: std::collections::BTreeMap<String, u64> = Default::default();
        let mut arr: Vec<f64> = Vec::new();
        let mut srv: Vec<f64> = Vec::new();
        let mut sizes: Vec<u64> = Vec::new();
        let mut late: Option<Instant> = None;
        let mut first: Option<Instant> = None;
        for (i, r) in answers {
            let a = match r {
                Ok(a) => a,
                Err(e) => {
                    *errors.entry(format!("transport: {e}")).or_default() += 1;
                    continue;
                }
            };
            let v: Value = serde_json::from_slice(&a.body).unwrap_or_default();
            if a.status != 200 {
                *errors.entry(format!("http_{}", a.status)).or_default() += 1;
                continue;
            }
            if let Some(c) = v["next_cursor"].as_str() {
                cursors[i] = c.to_string();
            }
            let has = v["changes"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["license_id"].as_str() == Some(license.to_string().as_str()))
            });
            if !has {
                *errors
                    .entry("answer_without_the_change".into())
                    .or_default() += 1;
                continue;
            }
            let ms = ms_since(a.arrived, t200);
            let server_ms = v["server_time"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| {
                    let d = t.with_timezone(&chrono::Utc) - t200_utc;
                    round(d.num_microseconds().unwrap_or(0) as f64 / 1000.0, 2)
                });
            if let Some(sm) = server_ms {
                srv.push(sm);
            }
            arrivals.push_str(&format!(
                "{round_no}\t{i}\t{ms}\t{}\n",
                server_ms.map_or("".into(), |v| v.to_string())
            ));
            sizes.push(a.body.len() as u64);
            arr.push(ms);
            late = Some(late.map_or(a.arrived, |l| l.max(a.arrived)));
            first = Some(first.map_or(a.arrived, |f| f.min(a.arrived)));
        }
        let delivered = arr.len();
        pooled.extend(&arr);
        let pos = event_pos.load(Ordering::Relaxed);
        let published = tr
            .checkpoints
            .iter()
            .find(|c| pos > 0 && c.1 >= pos)
            .map(|c| ms_since(c.0, t200));
        let stored = tr.stored.map(|t| ms_since(t, t200));
        let servable = tr.servable.map(|t| ms_since(t, t200));
        let first_ms = first.map(|t| ms_since(t, t200));
        let last_ms = late.map(|t| ms_since(t, t200));
        sizes.sort_unstable();
        let a = dist(&mut arr);
        out_rounds.push(json!({
            "round": round_no,
            "clients": n,
            "all_written_ms": all_written_ms,
            "park_s": round(park_s, 3),
            "answered_before_the_change": early,
            "change_http_ms": ms_since(t200, sent),
            "event_position": pos,
            "delivered": delivered,
            "missed": n - delivered,
            "error_kinds": errors,
            "arrival_ms": a,
            "server_time_ms": dist(&mut srv),
            "answer_bytes_p50": percentile(&sizes, 0.5),
            "delivery_s": round(delivery_s, 3),
            "grants_db_xact_per_s_parked": xact_rate(x0, x1),
            "pipeline_ms": {
                "published": published, "stored": stored, "servable": servable,
                "first_client": first_ms, "last_client": last_ms,
                "fanout_first_to_last": match (first_ms, last_ms) {
                    (Some(f), Some(l)) => json!(round(l - f, 2)), _ => Value::Null },
                "servable_to_first": match (servable, first_ms) {
                    (Some(s), Some(f)) => json!(round(f - s, 2)), _ => Value::Null },
                "servable_to_last": match (servable, last_ms) {
                    (Some(s), Some(l)) => json!(round(l - s, 2)), _ => Value::Null },
                "sample_ms": every.as_millis() as u64,
            },
        }));
    }
    if let Some(f) = o.get("arrivals-out") {
        std::fs::write(f, &arrivals).with_context(|| format!("writing {f}"))?;
    }
    let delivered = pooled.len();
    Ok(json!({
        "clients": n,
        "rounds": rounds,
        "wait_ms": wait_ms,
        "park_ms": park.as_millis() as u64,
        "first_sync": prime,
        "delivered": delivered,
        "missed": n * rounds - delivered,
        "arrival_ms": dist(&mut pooled),
        "per_round": out_rounds,
    }))
}
