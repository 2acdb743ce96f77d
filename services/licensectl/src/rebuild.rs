//! `licensectl rebuild`: starts (or joins) a projector rebuild and follows it
//! to the end, so an operator sees progress and gets a meaningful exit code.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

const IN_PROGRESS: &str = "REBUILD_IN_PROGRESS";
const BAR_WIDTH: usize = 24;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The projector's base URL.
    #[arg(long, env = "LICENSING_PROJECTOR_URL", hide_env_values = true, value_parser = base_url)]
    pub url: String,
    /// An API key with the admin scope.
    #[arg(long, env = "LICENSING_API_KEY", hide_env_values = true)]
    pub api_key: String,
    /// The models to rebuild, comma-separated (all when left out).
    #[arg(long, value_delimiter = ',', num_args = 1.., value_parser = model_name)]
    pub models: Option<Vec<String>>,
    /// How often to ask the projector for progress, in milliseconds.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    pub poll_ms: u64,
    /// How long to follow the rebuild before giving up (exit 2), in seconds.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_secs: u64,
}

fn base_url(s: &str) -> Result<String, String> {
    Ok(s.trim_end_matches('/').to_string())
}

fn model_name(s: &str) -> Result<String, String> {
    match s.trim() {
        "" => Err("an empty model name".into()),
        m => Ok(m.to_string()),
    }
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

pub async fn run(args: &Args, json: bool) -> anyhow::Result<bool> {
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

    let timeout = Duration::from_secs(args.timeout_secs);
    let deadline = Instant::now() + timeout;
    let mut bars = Bars::new(std::io::stderr().is_terminal());
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
        bars.draw(&states);

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
            bars.finish();
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                println!("rebuild {id}: {outcome}");
                let width = states.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
                for (name, r) in &states {
                    println!("  {}", progress_line(name, r.as_ref(), width));
                }
            }
            return Ok(outcome == "done");
        }
        if Instant::now() >= deadline {
            bail!(
                "rebuild {id} still running after {}s (--timeout-secs)",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
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

/// Progress on standard error: a bar per model on a terminal, otherwise
/// one line per poll (for logs).
struct Bars {
    multi: Option<indicatif::MultiProgress>,
    bars: Vec<indicatif::ProgressBar>,
}

impl Bars {
    fn new(tty: bool) -> Self {
        Self {
            multi: tty.then(indicatif::MultiProgress::new),
            bars: Vec::new(),
        }
    }

    fn draw(&mut self, states: &[(String, Option<Rebuild>)]) {
        let Some(multi) = &self.multi else {
            let width = states.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
            let lines: Vec<String> = states
                .iter()
                .map(|(name, r)| progress_line(name, r.as_ref(), width))
                .collect();
            eprintln!("{}", lines.join(" | "));
            return;
        };
        let width = states.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        while self.bars.len() < states.len() {
            let bar = crate::bar(
                Some(0),
                "{prefix} [{bar:24}] {percent:>3}% {pos}/{len} events {msg}",
            );
            self.bars.push(multi.add(bar));
        }
        for ((name, r), bar) in states.iter().zip(&self.bars) {
            bar.set_prefix(format!("{name:<width$}"));
            let Some(r) = r else {
                bar.set_message("waiting");
                continue;
            };
            bar.set_length(r.events + r.lag);
            bar.set_position(r.events);
            bar.set_message(match (r.status.as_str(), &r.error) {
                ("running", _) => format!("{:.0} ev/s ETA {}", r.events_per_sec, eta(r.eta_secs)),
                ("failed", Some(e)) => format!("failed: {e}"),
                (s, _) => s.to_string(),
            });
        }
    }

    fn finish(&self) {
        for bar in &self.bars {
            bar.finish_and_clear();
        }
    }
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

    fn parse(line: &str) -> Result<Args, clap::Error> {
        match crate::tests::parse(&format!("rebuild {line}"))?.command {
            crate::Command::Rebuild(a) => Ok(a),
            other => panic!("not rebuild: {other:?}"),
        }
    }

    #[test]
    fn parses_flags_with_defaults() {
        let a = parse("--url http://127.0.0.1:8084/ --api-key k").expect("ok");
        assert_eq!(
            (
                a.url.as_str(),
                a.api_key.as_str(),
                &a.models,
                a.poll_ms,
                a.timeout_secs
            ),
            ("http://127.0.0.1:8084", "k", &None, 500, 3600)
        );
        let a = parse(
            "--url u --api-key k --models audit_trail,license_state --poll-ms 50 --timeout-secs 9",
        )
        .expect("ok");
        assert_eq!(
            a.models,
            Some(vec!["audit_trail".to_string(), "license_state".to_string()])
        );
        assert_eq!((a.poll_ms, a.timeout_secs), (50, 9));
    }

    #[test]
    fn refuses_bad_arguments() {
        assert!(parse("--url u --api-key k --poll-ms 0").is_err());
        assert!(parse("--url u --api-key k --timeout-secs x").is_err());
        assert!(parse("--url u --api-key k --models ,").is_err());
        assert!(parse("--url u --api-key k --model a").is_err());
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
