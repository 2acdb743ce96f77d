//! `licensectl export`: the audit trail (or a filtered part of it) streamed
//! from the projector's `GET /v1/audit?format=ndjson|csv` into a file. The
//! rows go to a temporary file beside the target, renamed over it only once
//! the export is known complete: an export the projector ends with its
//! error line, or whose stream is cut, leaves no file that looks whole and
//! exits 1.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Ndjson,
    Csv,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Self::Ndjson => "ndjson",
            Self::Csv => "csv",
        }
    }

    /// How the projector's last line starts when the export failed.
    fn error_mark(self) -> &'static [u8] {
        match self {
            Self::Ndjson => b"{\"error\":",
            Self::Csv => b"#error,",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The projector's base URL.
    #[arg(long, env = "LICENSING_PROJECTOR_URL", hide_env_values = true)]
    pub url: String,
    /// An API key with the auditor scope.
    #[arg(long, env = "LICENSING_API_KEY", hide_env_values = true)]
    pub api_key: String,
    /// The file to write (replaced only once the export is complete).
    #[arg(long, short)]
    pub output: PathBuf,
    /// One JSON object per line, or CSV with a header line.
    #[arg(long, value_enum, default_value = "ndjson")]
    pub format: Format,
    /// Only this license's events.
    #[arg(long)]
    pub license_id: Option<uuid::Uuid>,
    /// Only this actor's events.
    #[arg(long)]
    pub actor: Option<String>,
    /// Only events of this type.
    #[arg(long)]
    pub event_type: Option<String>,
    /// Only events of this correlation id.
    #[arg(long)]
    pub correlation_id: Option<String>,
    /// Only events recorded at or after this instant (RFC 3339).
    #[arg(long)]
    pub from: Option<DateTime<Utc>>,
    /// Only events recorded before this instant (RFC 3339).
    #[arg(long)]
    pub to: Option<DateTime<Utc>>,
}

impl Args {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = vec![("format", self.format.name().to_string())];
        let mut add = |k: &'static str, v: Option<String>| {
            if let Some(v) = v {
                q.push((k, v));
            }
        };
        add("license_id", self.license_id.map(|u| u.to_string()));
        add("actor", self.actor.clone());
        add("event_type", self.event_type.clone());
        add("correlation_id", self.correlation_id.clone());
        add("from", self.from.map(|t| t.to_rfc3339()));
        add("to", self.to.map(|t| t.to_rfc3339()));
        q
    }
}

/// What an export wrote, and whether the projector finished it.
#[derive(Debug, Default)]
struct Written {
    bytes: u64,
    /// Records ended by a line break, the CSV header and an error line
    /// included.
    records: u64,
    /// The projector's error line, when it ended a cut export with one.
    error: Option<String>,
}

/// Counts records and keeps the start of the last line, which is where
/// the projector's error line would be. A CSV record may span lines (a
/// quoted field holding a line break): only a line break outside quotes
/// ends one. JSON lines escape theirs.
struct Lines {
    format: Format,
    written: Written,
    quoted: bool,
    current: Vec<u8>,
    last: Vec<u8>,
}

/// Enough of a line to recognise an error line and quote its reason.
const KEPT: usize = 512;

impl Lines {
    fn new(format: Format) -> Self {
        Self {
            format,
            written: Written::default(),
            quoted: false,
            current: Vec::new(),
            last: Vec::new(),
        }
    }

    fn feed(&mut self, chunk: &[u8]) {
        self.written.bytes += chunk.len() as u64;
        for &b in chunk {
            if self.current.len() < KEPT {
                self.current.push(b);
            }
            match b {
                b'"' if self.format == Format::Csv => self.quoted = !self.quoted,
                b'\n' => {
                    if !self.quoted {
                        self.written.records += 1;
                    }
                    self.last = std::mem::take(&mut self.current);
                }
                _ => {}
            }
        }
    }

    /// What was written; for a cut stream, the projector's error line as
    /// the reason when it sent one (printable characters only: its text
    /// may quote an event's).
    fn finish(self, cut: bool) -> Written {
        let last = if self.current.is_empty() {
            &self.last
        } else {
            &self.current
        };
        let mut written = self.written;
        if cut && last.starts_with(self.format.error_mark()) {
            let text: String = String::from_utf8_lossy(last)
                .chars()
                .filter(|c| !c.is_control())
                .collect();
            written.error = Some(text);
        }
        written
    }
}

/// Largest problem body read from a refusal.
const MAX_PROBLEM: usize = 64 << 10;

pub async fn run(a: &Args, json: bool) -> anyhow::Result<bool> {
    let Some(name) = a.output.file_name() else {
        bail!("--output {} names no file", a.output.display());
    };
    if a.output.is_dir() {
        bail!("--output {} is a directory", a.output.display());
    }
    let url = format!("{}/v1/audit", a.url.trim_end_matches('/'));
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        // The projector sends a row at least this often while it exports
        // (its own export timeout ends the stream otherwise).
        .read_timeout(Duration::from_secs(120))
        .build()?;
    let mut resp = http
        .get(&url)
        .query(&a.query())
        .bearer_auth(&a.api_key)
        .send()
        .await
        .context("calling the projector")?;
    if !resp.status().is_success() {
        let status = resp.status();
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_PROBLEM {
                break;
            }
        }
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let text = |k: &str| -> String {
            problem[k]
                .as_str()
                .unwrap_or("")
                .chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect()
        };
        let code = Some(text("code")).filter(|c| !c.is_empty());
        let detail = Some(text("detail"))
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| text("title"));
        bail!(
            "GET /v1/audit refused: {} {detail}",
            code.unwrap_or_else(|| status.to_string())
        );
    }
    // Beside the target, so the rename stays on one file system; created
    // anew (never through a planted link), readable by its owner only.
    let partial = a.output.with_file_name(format!(
        ".{}.partial-{}",
        name.to_string_lossy(),
        uuid::Uuid::new_v4().simple()
    ));
    let outcome = receive(&mut resp, &partial, a.format).await;
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    let complete = outcome.cut.is_none();
    if complete {
        if let Err(e) = std::fs::rename(&partial, &a.output) {
            let _ = std::fs::remove_file(&partial);
            return Err(anyhow::Error::new(e).context(format!("writing {}", a.output.display())));
        }
    } else {
        let _ = std::fs::remove_file(&partial);
    }
    let written = outcome.written;
    // The CSV header, and the error line a cut export may end with.
    let rows = written
        .records
        .saturating_sub(u64::from(a.format == Format::Csv))
        .saturating_sub(u64::from(written.error.is_some()));
    let reason = written
        .error
        .clone()
        .or_else(|| outcome.cut.as_ref().map(|e| format!("{e:#}")));
    if json {
        println!(
            "{}",
            serde_json::json!({
                "file": a.output.display().to_string(),
                "format": a.format.name(),
                "complete": complete,
                "rows": rows,
                "bytes": written.bytes,
                "error": reason,
            })
        );
    } else if complete {
        println!(
            "exported {rows} rows ({} bytes, {}) to {}",
            written.bytes,
            a.format.name(),
            a.output.display()
        );
    }
    if let Some(reason) = reason {
        eprintln!(
            "licensectl: the export is incomplete after {rows} rows, nothing written to {}: {reason}",
            a.output.display()
        );
    }
    Ok(complete)
}

/// What `receive` got.
struct Received {
    written: Written,
    /// Why the stream ended before its clean end, if it did.
    cut: Option<anyhow::Error>,
}

/// Streams the body into `path`. A stream that ends uncleanly is a cut
/// export (the projector ends a failed one so); a file that cannot be
/// written is an error.
async fn receive(
    resp: &mut reqwest::Response,
    path: &Path,
    format: Format,
) -> anyhow::Result<Received> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let mut file = std::io::BufWriter::new(file);
    let bar = crate::bar(None, "{spinner} {bytes} ({binary_bytes_per_sec}) {msg}");
    let mut lines = Lines::new(format);
    let cut = loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                file.write_all(&chunk)
                    .with_context(|| format!("writing {}", path.display()))?;
                lines.feed(&chunk);
                bar.set_position(lines.written.bytes);
                bar.set_message(format!("{} records", lines.written.records));
            }
            Ok(None) => break None,
            Err(e) => break Some(anyhow::Error::new(e).context("the export stream was cut")),
        }
    };
    bar.finish_and_clear();
    file.flush()
        .and_then(|()| file.get_ref().sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(Received {
        written: lines.finish(cut.is_some()),
        cut,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Args, clap::Error> {
        match crate::tests::parse(&format!("export {line}"))?.command {
            crate::Command::Export(a) => Ok(a),
            other => panic!("not export: {other:?}"),
        }
    }

    #[test]
    fn parses_filters_into_the_query() {
        let a = parse(
            "--url u --api-key k -o out.csv --format csv --license-id \
             01a24f65-db8a-73d8-ab13-9b2ead17eafe --from 2026-01-01T00:00:00Z",
        )
        .expect("parses");
        assert_eq!(
            a.query(),
            [
                ("format", "csv".to_string()),
                ("license_id", "01a24f65-db8a-73d8-ab13-9b2ead17eafe".into()),
                ("from", "2026-01-01T00:00:00+00:00".into()),
            ]
        );
        assert!(
            parse("--url u --api-key k").is_err(),
            "an output is required"
        );
        assert!(parse("--url u --api-key k -o f --format xml").is_err());
        assert!(parse("--url u --api-key k -o f --license-id nope").is_err());
        assert!(parse("--url u --api-key k -o f --from yesterday").is_err());
    }

    #[test]
    fn counts_records_across_chunks_and_finds_the_error_line_of_a_cut_export() {
        let mut l = Lines::new(Format::Ndjson);
        l.feed(b"{\"a\":1}\n{\"a\"");
        l.feed(b":2}\n");
        let w = l.finish(false);
        assert_eq!((w.records, w.bytes, w.error), (2, 16, None));

        let mut l = Lines::new(Format::Ndjson);
        l.feed(b"{\"a\":1}\n{\"error\": {\"code\": \"EXPORT_INCOMPLETE\"}}\n");
        let w = l.finish(true);
        assert!(w.error.is_some_and(|e| e.contains("EXPORT_INCOMPLETE")));

        let mut l = Lines::new(Format::Csv);
        l.feed(b"event_id,context\nx,y\n#error,EXPORT_INCOMPLETE,timeout\x1b[2J\n");
        let w = l.finish(true);
        assert_eq!(w.records, 3);
        assert_eq!(
            w.error.as_deref(),
            Some("#error,EXPORT_INCOMPLETE,timeout[2J")
        );
    }

    /// A field may hold a line break, and text that looks like the error
    /// line: a complete stream is complete whatever its last line says.
    #[test]
    fn a_quoted_line_break_is_not_a_record_and_a_complete_export_has_no_error() {
        let mut l = Lines::new(Format::Csv);
        l.feed(b"event_id,causation_id\nx,\"a\n#error,EXPORT_INCOMPLETE,forged\"\n");
        let w = l.finish(false);
        assert_eq!(w.records, 2, "the header and one row");
        assert_eq!(w.error, None);
    }
}
