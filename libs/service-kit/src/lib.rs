//! The actix-web bootstrap every licensing service shares: layered config,
//! tracing with correlation ids, RFC 7807 problem responses, a strict JSON
//! extractor, Prometheus metrics, health checks and graceful shutdown.
//!
//! It lives once here so that every service answers bad input, probes and
//! scrapes the same way (STYLE rule 12).

pub mod auth;
pub mod cache;
pub mod checkpoints;
pub mod client_addr;
pub mod clock;
pub mod command;
pub mod command_topic;
pub mod config;
pub mod follow;
pub mod health;
pub mod json;
pub mod keys;
pub mod metrics;
pub mod openapi;
pub mod outbound;
pub mod platform;
pub mod problem;
pub mod rate_limit;
pub mod replica;
pub mod server;
pub mod telemetry;
pub mod webhooks;

// Every service's allocator (a global allocator may live in any crate of a
// binary; this one is linked by all five). glibc's malloc and free took
// about 45 % of the projector's time in a rebuild (perf,
// docs/benchmarks.md): decoding, folding and answering JSON allocate and
// drop many small values per event and per request, in every service.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub use config::{load, redact_url, CommonConfig, ConfigError};
pub use health::ReadyCheck;
pub use json::{configure_extractors, BodyLimit, Json, Query, DEFAULT_BODY_LIMIT};
pub use metrics::Metrics;
pub use problem::{Problem, ProblemBody};
pub use server::{serve, shutdown_signal, ServiceApp};
pub use telemetry::CorrelationId;
