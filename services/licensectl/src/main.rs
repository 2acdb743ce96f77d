//! licensectl — the operators' and auditors' command line: stored chains
//! and signed checkpoints verified (`verify`), dispute bundles checked
//! offline (`verify-bundle`), projector rebuilds driven (`rebuild`), the
//! audit trail exported to a file (`export`) and a Kafka deployment
//! provisioned (`kafka provision`). `licensectl help` and `<command>
//! --help` describe each; the README shows them.
//!
//! Text on standard output by default, JSON with `--json`; progress and
//! diagnostics on standard error (bars only on a terminal).
//!
//! Exit codes: 0 success, 1 the check, export or rebuild failed, 2 usage or
//! IO.

mod checkpoints;
mod export;
mod kafka;
mod rebuild;
mod verify;
mod verify_bundle;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "licensectl",
    version,
    about = "The licensing backend's command line for operators and auditors",
    after_help = "Exit codes: 0 ok; 1 a chain broken, a bundle invalid, an export or a \
                  rebuild failed; 2 usage or IO error."
)]
pub struct Cli {
    /// Print the result as JSON on standard output (one document, or one
    /// per line for `verify`) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Re-hash stored event chains; with checkpoints, also check every
    /// stored event against the service's signed checkpoints.
    Verify(verify::Args),
    /// Check a dispute bundle offline, with nothing but trusted public keys.
    VerifyBundle(verify_bundle::Args),
    /// Start (or join) a projector rebuild and follow it to the end.
    Rebuild(rebuild::Args),
    /// Export the audit trail, or a filtered part of it, to a file.
    Export(export::Args),
    /// Kafka administration.
    #[command(subcommand)]
    Kafka(kafka::Command),
}

/// The deployment's topic prefix, shared by the commands that name topics.
#[derive(Debug, clap::Args)]
pub struct Prefix {
    /// The deployment's topic prefix.
    #[arg(
        long,
        env = "LICENSING_TOPIC_PREFIX",
        hide_env_values = true,
        default_value = "licensing"
    )]
    pub prefix: String,
}

/// Largest bundle or checkpoint file read: a dispute bundle of a license
/// with a long history is tens of MiB; beyond this it is not ours.
const MAX_DATA_FILE: u64 = 256 << 20;
/// Largest JWKS read.
const MAX_JWKS_FILE: u64 = 1 << 20;

/// A file's text, refused beyond `max` bytes rather than read into memory
/// whatever its size (a path may name a device or a pipe).
fn read_bounded(path: &Path, max: u64) -> anyhow::Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() as u64 > max {
        bail!("{} is larger than {max} bytes", path.display());
    }
    String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8 text", path.display()))
}

/// A non-empty path, for comma-separated file lists: `a,,b` names two
/// files, a lone `,` none (a usage error, not "no keys").
fn file_path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("an empty file name".into());
    }
    Ok(PathBuf::from(s))
}

/// The keys of JWKS files, each one checked to be a key we can verify
/// with: a file holding something else is an error, not silently fewer keys.
fn read_jwks(paths: &[PathBuf]) -> anyhow::Result<Vec<(String, p256::ecdsa::VerifyingKey)>> {
    let mut keys = Vec::new();
    for path in paths {
        let jwks: signing::Jwks = serde_json::from_str(&read_bounded(path, MAX_JWKS_FILE)?)
            .with_context(|| format!("{} is not a JWKS", path.display()))?;
        for k in &jwks.keys {
            let v = signing::verifying_key(k)
                .with_context(|| format!("key {:?} of {}", k.kid, path.display()))?;
            keys.push((k.kid.clone(), v));
        }
    }
    Ok(keys)
}

/// A progress bar on standard error, drawn only on a terminal (hidden
/// otherwise, so logs and pipes get the text lines alone).
fn bar(len: Option<u64>, template: &str) -> indicatif::ProgressBar {
    let bar = match len {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("#>-"));
    }
    bar
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version exit 0, usage errors 2.
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("licensectl: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("licensectl: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Command::Verify(a) => verify::run(&a, cli.json).await,
        Command::VerifyBundle(a) => verify_bundle::run(&a, cli.json),
        Command::Rebuild(a) => rebuild::run(&a, cli.json).await,
        Command::Export(a) => export::run(&a, cli.json).await,
        Command::Kafka(kafka::Command::Provision(a)) => kafka::run(&a, cli.json).await,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The command line as licensectl parses it, environment included.
    pub fn parse(line: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("licensectl").chain(line.split_whitespace()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn usage_errors_and_help_have_their_exit_codes() {
        let e = parse("frobnicate").expect_err("unknown command");
        assert_eq!(e.exit_code(), 2);
        let e = parse("verify --help").expect_err("help");
        assert_eq!(e.exit_code(), 0);
        assert!(e.to_string().contains("--database-url"), "{e}");
    }

    /// The README shows every command's `--help` as licensectl prints it.
    #[test]
    fn the_readme_shows_each_commands_help() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
                .expect("README.md");
        for command in [
            "",
            "verify",
            "verify-bundle",
            "rebuild",
            "export",
            "kafka provision",
        ] {
            let line = format!("{command} --help");
            let help = parse(&line).expect_err("help").render().to_string();
            let shown = format!("$ licensectl {}\n{help}```", line.trim());
            assert!(
                readme.contains(&shown),
                "README.md lacks, or has an old:\n{shown}"
            );
        }
    }

    #[test]
    fn json_is_global() {
        assert!(
            parse("--json kafka provision --config a")
                .expect("before")
                .json
        );
        assert!(
            parse("kafka provision --config a --json")
                .expect("after")
                .json
        );
        assert!(!parse("kafka provision --config a").expect("none").json);
    }

    #[test]
    fn an_empty_file_name_is_a_usage_error() {
        assert!(file_path("").is_err());
        assert_eq!(file_path("a").expect("one"), PathBuf::from("a"));
    }

    #[test]
    fn files_are_read_only_up_to_a_bound() {
        let path = std::env::temp_dir().join(format!("licensectl-bound-{}", std::process::id()));
        std::fs::write(&path, "x".repeat(11)).expect("write");
        assert!(read_bounded(&path, 10).is_err());
        assert_eq!(read_bounded(&path, 11).expect("fits").len(), 11);
        let _ = std::fs::remove_file(&path);
    }
}
