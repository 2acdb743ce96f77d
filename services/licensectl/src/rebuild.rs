//! `licensectl rebuild`: starts (or joins) a projector rebuild and follows it
//! to the end, so an operator sees progress and gets a meaningful exit code.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::{flags, USAGE};

const IN_PROGRESS: &str = "REBUILD_IN_PROGRESS";
const BAR_WIDTH: usize = 24;

#[derive(Debug, PartialEq, Eq)]
pub struct Args {
    pub url: String,
    pub api_key: String,
    pub models: Option<Vec<String>>,
    pub poll: Duration,
    pub timeout: Duration,
}

pub fn parse(args: &[String], env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Args> {
    let mut f = flags(
        args,
        &[
            "--url",
            "--api-key",
            "--models",
            "--poll-ms",
            "--timeout-secs",
        ],
    )?;
    let url = f
        .remove("--url")
        .or_else(|| env("LICENSING_PROJECTOR_URL"))
        .with_context(|| format!("--url or LICENSING_PROJECTOR_URL is required\n{USAGE}"))?;
    let api_key = f
        .remove("--api-key")
        .or_else(|| env("LICENSING_API_KEY"))
        .with_context(|| format!("--api-key or LICENSING_API_KEY is required\n{USAGE}"))?;
    let models = f.remove("--models").map(|m| {
        m.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect::<Vec<_>>()
    });
    if models.as_ref().is_some_and(Vec::is_empty) {
        bail!("--models names no model\n{USAGE}");
    }
    let number = |name: &str, default: u64| -> anyhow::Result<u64> {
        match f.get(name) {
            None => Ok(default),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => bail!("{name} must be a positive integer, not {v:?}"),
            },
        }
    };
    Ok(Args {
        url: url.trim_end_matches('/').to_string(),
        api_key,
        models,
        poll: Duration::from_millis(number("--poll-ms", 500)?),
        timeout: Duration::from_secs(number("--timeout-secs", 3600)?),
    })
}

#[derive(Debug, Deserialize)]
struct Started {
    rebuild_id: String,
    models: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rebuild {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub table: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub events: u64,
    #[serde(default)]
    pub events_per_sec: f64,
    #[serde(default)]
    pub lag: u64,
    #[serde(default)]
    pub eta_secs: Option<f64>,
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Model {
    name: String,
    rebuild: Option<Rebuild>,
}

#[derive(Debug, Deserialize)]
struct Projections {
    models: Vec<Model>,
}

#[derive(Debug, Default, Deserialize)]
struct Problem {
    code: Option<String>,
    title: Option<String>,
    detail: Option<String>,
}

struct Api {
    http: reqwest::Client,
    url: String,
    api_key: String,
}

impl Api {
    /// The body of a 2xx answer, or the problem of any other as an error.
    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Result<String, Problem>> {
        let resp = req
            .bearer_auth(&self.api_key)
            .send()
            .await
            .with_context(|| format!("calling the projector at {}", self.url))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .context("reading the projector's answer")?;
        if status.is_success() {
            return Ok(Ok(body));
        }
        let mut p: Problem = serde_json::from_str(&body).unwrap_or_default();
        if p.code.is_none() {
            p.code = Some(status.to_string());
        }
        if p.title.is_none() && p.detail.is_none() {
            p.detail = Some(body.chars().take(200).collect());
        }
        Ok(Err(p))
    }

    async fn projections(&self) -> anyhow::Result<Projections> {
        let url = format!("{}/v1/admin/projections", self.url);
        let body = self
            .send(self.http.get(&url))
            .await?
            .map_err(|p| problem_error("GET /v1/admin/projections", &p))?;
        serde_json::from_str(&body).context("the projections answer is not understood")
    }
}

fn problem_error(what: &str, p: &Problem) -> anyhow::Error {
    let text = p.detail.as_deref().or(p.title.as_deref()).unwrap_or("");
    anyhow::anyhow!(
        "{what} refused: {}: {text}",
        p.code.as_deref().unwrap_or("?")
    )
}

pub async fn run(args: &Args) -> anyhow::Result<bool> {
    let api = Api {
        http: reqwest::Client::new(),
        url: args.url.clone(),
        api_key: args.api_key.clone(),
    };
    let (id, mut models) = start(&api, args.models.as_deref()).await?;
    eprintln!(
        "licensectl: following rebuild {id} of {}",
        models.join(", ")
    );

    let deadline = Instant::now() + args.timeout;
    let tty = std::io::stderr().is_terminal();
    let mut drawn = 0;
    loop {
        let snapshot = api.projections().await?;
        // When joining a rebuild, only the projector knows all its models.
        for m in &snapshot.models {
            if m.rebuild.as_ref().is_some_and(|r| r.id == id) && !models.contains(&m.name) {
                models.push(m.name.clone());
            }
        }
        let states: Vec<(String, Option<Rebuild>)> = models
            .iter()
            .map(|name| {
                let r = snapshot
                    .models
                    .iter()
                    .find(|m| m.name == *name)
                    .and_then(|m| m.rebuild.clone())
                    .filter(|r| r.id == id);
                (name.clone(), r)
            })
            .collect();
        drawn = draw(&states, tty, drawn);

        let status = |s: &str| {
            states
                .iter()
                .filter(|(_, r)| r.as_ref().is_some_and(|r| r.status == s))
                .count()
        };
        let outcome = if status("failed") > 0 {
            Some("failed")
        } else if status("done") == states.len() {
            Some("done")
        } else {
            None
        };
        if let Some(outcome) = outcome {
            let summary = serde_json::json!({
                "rebuild_id": id,
                "status": outcome,
                "models": states
                    .iter()
                    .map(|(name, r)| serde_json::json!({"name": name, "rebuild": r}))
                    .collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&summary)?);
            return Ok(outcome == "done");
        }
        if Instant::now() >= deadline {
            bail!(
                "rebuild {id} still running after {}s (--timeout-secs)",
                args.timeout.as_secs()
            );
        }
        tokio::time::sleep(args.poll).await;
    }
}

/// Starts a rebuild, or joins the one already running: its id and models.
async fn start(api: &Api, models: Option<&[String]>) -> anyhow::Result<(String, Vec<String>)> {
    let body = match models {
        Some(m) => serde_json::json!({ "models": m }),
        None => serde_json::json!({}),
    };
    let url = format!("{}/v1/admin/rebuild", api.url);
    match api.send(api.http.post(&url).json(&body)).await? {
        Ok(body) => {
            let s: Started =
                serde_json::from_str(&body).context("the rebuild answer is not understood")?;
            Ok((s.rebuild_id, s.models))
        }
        Err(p) if p.code.as_deref() == Some(IN_PROGRESS) => {
            let snapshot = api.projections().await?;
            let running = snapshot
                .models
                .iter()
                .filter(|m| models.is_none_or(|want| want.contains(&m.name)))
                .find_map(|m| m.rebuild.as_ref().filter(|r| r.status == "running"))
                .map(|r| r.id.clone())
                .context("the projector says a rebuild is in progress, but lists none running")?;
            let names = snapshot
                .models
                .iter()
                .filter(|m| m.rebuild.as_ref().is_some_and(|r| r.id == running))
                .map(|m| m.name.clone())
                .collect();
            eprintln!("licensectl: a rebuild is already running; joining it");
            Ok((running, names))
        }
        Err(p) => Err(problem_error("POST /v1/admin/rebuild", &p)),
    }
}

/// Draws the bars; returns how many lines are on screen to redraw next time.
fn draw(states: &[(String, Option<Rebuild>)], tty: bool, drawn: usize) -> usize {
    let width = states.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let lines: Vec<String> = states
        .iter()
        .map(|(name, r)| progress_line(name, r.as_ref(), width))
        .collect();
    let mut err = std::io::stderr().lock();
    // Progress is best effort: a closed stderr must not fail the rebuild.
    let _ = if tty {
        let up = if drawn > 0 {
            format!("\x1b[{drawn}A")
        } else {
            String::new()
        };
        let body: String = lines.iter().map(|l| format!("\r\x1b[K{l}\n")).collect();
        write!(err, "{up}{body}")
    } else {
        writeln!(err, "{}", lines.join(" | "))
    };
    lines.len()
}

/// One model's progress: bar, share done, counts, rate and ETA.
pub fn progress_line(name: &str, r: Option<&Rebuild>, name_width: usize) -> String {
    let Some(r) = r else {
        return format!("{name:<name_width$} waiting");
    };
    let total = r.events + r.lag;
    let share = match (r.status.as_str(), total) {
        ("done", _) => 1.0,
        (_, 0) => 0.0,
        _ => r.events as f64 / total as f64,
    };
    let filled = ((share * BAR_WIDTH as f64).round() as usize).min(BAR_WIDTH);
    let bar = format!("{}{}", "#".repeat(filled), "-".repeat(BAR_WIDTH - filled));
    let tail = match (r.status.as_str(), &r.error) {
        ("running", _) => format!("ETA {}", eta(r.eta_secs)),
        ("failed", Some(e)) => format!("failed: {e}"),
        (s, _) => s.to_string(),
    };
    format!(
        "{name:<name_width$} [{bar}] {:>3}% {}/{total} events {:.0} ev/s {tail}",
        (share * 100.0).floor() as u64,
        r.events,
        r.events_per_sec,
    )
}

pub fn eta(secs: Option<f64>) -> String {
    let Some(secs) = secs.filter(|s| s.is_finite() && *s >= 0.0) else {
        return "--".to_string();
    };
    let s = secs.ceil() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn parses_flags_with_defaults() {
        let a = parse(&args("--url http://127.0.0.1:8084/ --api-key k"), no_env).expect("ok");
        assert_eq!(
            a,
            Args {
                url: "http://127.0.0.1:8084".into(),
                api_key: "k".into(),
                models: None,
                poll: Duration::from_millis(500),
                timeout: Duration::from_secs(3600),
            }
        );
        let a = parse(
            &args("--url u --api-key k --models audit_trail,license_state --poll-ms 50 --timeout-secs 9"),
            no_env,
        )
        .expect("ok");
        assert_eq!(
            a.models,
            Some(vec!["audit_trail".to_string(), "license_state".to_string()])
        );
        assert_eq!(a.poll, Duration::from_millis(50));
        assert_eq!(a.timeout, Duration::from_secs(9));
    }

    #[test]
    fn falls_back_on_the_environment() {
        let env = |k: &str| match k {
            "LICENSING_PROJECTOR_URL" => Some("http://p".to_string()),
            "LICENSING_API_KEY" => Some("secret".to_string()),
            _ => None,
        };
        let a = parse(&[], env).expect("ok");
        assert_eq!((a.url.as_str(), a.api_key.as_str()), ("http://p", "secret"));
        let a = parse(&args("--api-key flag"), env).expect("ok");
        assert_eq!(a.api_key, "flag");
    }

    #[test]
    fn refuses_bad_arguments() {
        assert!(parse(&args("--api-key k"), no_env).is_err());
        assert!(parse(&args("--url u"), no_env).is_err());
        assert!(parse(&args("--url u --api-key k --poll-ms 0"), no_env).is_err());
        assert!(parse(&args("--url u --api-key k --timeout-secs x"), no_env).is_err());
        assert!(parse(&args("--url u --api-key k --models ,"), no_env).is_err());
        assert!(parse(&args("--url u --api-key k --model a"), no_env).is_err());
    }

    fn rebuild(status: &str, events: u64, lag: u64, eta_secs: Option<f64>) -> Rebuild {
        Rebuild {
            id: "r1".into(),
            status: status.into(),
            table: None,
            started_at: None,
            finished_at: None,
            events,
            events_per_sec: 456.4,
            lag,
            eta_secs,
            error: None,
        }
    }

    #[test]
    fn draws_progress() {
        let r = rebuild("running", 250, 750, Some(1.5));
        assert_eq!(
            progress_line("audit_trail", Some(&r), 13),
            "audit_trail   [######------------------]  25% 250/1000 events 456 ev/s ETA 2s"
        );
        let r = rebuild("done", 1000, 0, None);
        assert_eq!(
            progress_line("license_state", Some(&r), 13),
            "license_state [########################] 100% 1000/1000 events 456 ev/s done"
        );
        let mut r = rebuild("failed", 0, 0, None);
        r.error = Some("boom".into());
        assert!(progress_line("m", Some(&r), 1).ends_with("  0% 0/0 events 456 ev/s failed: boom"));
        assert_eq!(progress_line("m", None, 3), "m   waiting");
    }

    #[test]
    fn formats_eta() {
        assert_eq!(eta(None), "--");
        assert_eq!(eta(Some(f64::NAN)), "--");
        assert_eq!(eta(Some(0.0)), "0s");
        assert_eq!(eta(Some(59.2)), "1m00s");
        assert_eq!(eta(Some(125.0)), "2m05s");
        assert_eq!(eta(Some(7260.0)), "2h01m");
    }
}
