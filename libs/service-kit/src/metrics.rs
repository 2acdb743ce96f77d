//! A minimal Prometheus registry (text exposition format 0.0.4) and the HTTP
//! metrics middleware.
//!
//! Hand-rolled because the whole need is counters, gauges and one histogram
//! shape; a metrics crate would add more surface than it removes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};

/// Upper bounds (seconds) of every histogram's buckets: 1 ms to 10 s covers
/// everything from a cached read to a slow broker round trip.
pub const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Content type Prometheus expects for format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const HTTP_REQUESTS: &str = "http_requests_total";
const HTTP_DURATION: &str = "http_request_duration_seconds";
const HTTP_PANICS: &str = "http_panics_total";

/// Process-wide metric registry. Clones share the same data.
///
/// Metric and label names come from code and must be valid Prometheus
/// names; label *values* may be anything (they are escaped). Keep label
/// values bounded: never put ids, keys or raw paths in them.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Mutex<Registry>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Registry {
    families: BTreeMap<String, Family>,
}

struct Family {
    help: String,
    kind: Kind,
    series: BTreeMap<Labels, Value>,
}

type Labels = Vec<(String, String)>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

enum Value {
    Counter(u64),
    Gauge(i64),
    Histogram {
        /// Non-cumulative counts per bucket; the last slot is +Inf.
        buckets: [u64; BUCKETS.len() + 1],
        sum: f64,
        count: u64,
    },
}

impl Metrics {
    /// An empty registry with the HTTP metrics described.
    pub fn new() -> Self {
        let metrics = Self::default();
        metrics.describe(HTTP_REQUESTS, "HTTP requests served.");
        metrics.describe(HTTP_DURATION, "HTTP request latency in seconds.");
        metrics.describe(
            HTTP_PANICS,
            "Requests whose handler panicked (answered 500).",
        );
        metrics
    }

    /// Sets the HELP text of a metric (otherwise its name is used).
    pub fn describe(&self, name: &str, help: &str) {
        let mut reg = self.lock();
        match reg.families.get_mut(name) {
            Some(family) => family.help = help.to_owned(),
            None => {
                reg.families.insert(
                    name.to_owned(),
                    Family {
                        help: help.to_owned(),
                        // Fixed by the first recording.
                        kind: Kind::Counter,
                        series: BTreeMap::new(),
                    },
                );
            }
        }
    }

    /// Adds `by` to a counter.
    pub fn inc_counter(&self, name: &str, labels: &[(&str, &str)], by: u64) {
        self.update(name, Kind::Counter, labels, |v| {
            if let Value::Counter(c) = v {
                *c = c.saturating_add(by);
            }
        });
    }

    /// Sets a gauge.
    pub fn set_gauge(&self, name: &str, labels: &[(&str, &str)], value: i64) {
        self.update(name, Kind::Gauge, labels, |v| {
            if let Value::Gauge(g) = v {
                *g = value;
            }
        });
    }

    /// Records one observation (in seconds) into a histogram with
    /// [`BUCKETS`].
    pub fn observe_histogram(&self, name: &str, labels: &[(&str, &str)], seconds: f64) {
        self.update(name, Kind::Histogram, labels, |v| {
            if let Value::Histogram {
                buckets,
                sum,
                count,
            } = v
            {
                let slot = BUCKETS
                    .iter()
                    .position(|bound| seconds <= *bound)
                    .unwrap_or(BUCKETS.len());
                buckets[slot] += 1;
                *sum += seconds;
                *count += 1;
            }
        });
    }

    fn update(&self, name: &str, kind: Kind, labels: &[(&str, &str)], f: impl FnOnce(&mut Value)) {
        let mut reg = self.lock();
        let family = reg
            .families
            .entry(name.to_owned())
            .or_insert_with(|| Family {
                help: name.to_owned(),
                kind,
                series: BTreeMap::new(),
            });
        if family.series.is_empty() {
            // A family created by `describe` takes the kind of its first use.
            family.kind = kind;
        } else if family.kind != kind {
            // A programming error; dropping the sample beats poisoning the
            // exposition with two types under one name.
            tracing::warn!(
                metric = name,
                "metric recorded with a different type; ignored"
            );
            return;
        }
        let key: Labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let value = family.series.entry(key).or_insert_with(|| match kind {
            Kind::Counter => Value::Counter(0),
            Kind::Gauge => Value::Gauge(0),
            Kind::Histogram => Value::Histogram {
                buckets: [0; BUCKETS.len() + 1],
                sum: 0.0,
                count: 0,
            },
        });
        f(value);
    }

    /// Renders every metric in the text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let reg = self.lock();
        let mut out = String::new();
        for (name, family) in &reg.families {
            if family.series.is_empty() {
                continue;
            }
            // Writing to a String cannot fail.
            let _ = writeln!(out, "# HELP {name} {}", escape_help(&family.help));
            let _ = writeln!(out, "# TYPE {name} {}", family.kind.as_str());
            for (labels, value) in &family.series {
                match value {
                    Value::Counter(c) => {
                        let _ = writeln!(out, "{name}{} {c}", label_set(labels, None));
                    }
                    Value::Gauge(g) => {
                        let _ = writeln!(out, "{name}{} {g}", label_set(labels, None));
                    }
                    Value::Histogram {
                        buckets,
                        sum,
                        count,
                    } => {
                        let mut cumulative = 0;
                        for (i, n) in buckets.iter().enumerate() {
                            cumulative += n;
                            let le = BUCKETS
                                .get(i)
                                .map_or_else(|| "+Inf".to_owned(), |b| format_float(*b));
                            let _ = writeln!(
                                out,
                                "{name}_bucket{} {cumulative}",
                                label_set(labels, Some(&le))
                            );
                        }
                        let set = label_set(labels, None);
                        let _ = writeln!(out, "{name}_sum{set} {}", format_float(*sum));
                        let _ = writeln!(out, "{name}_count{set} {count}");
                    }
                }
            }
        }
        out
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock cannot leave a half-written sample
        // that matters; keep serving metrics rather than panicking forever.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn format_float(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

fn label_set(labels: &Labels, le: Option<&str>) -> String {
    if labels.is_empty() && le.is_none() {
        return String::new();
    }
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    format!("{{{}}}", parts.join(","))
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Middleware recording request count and latency per matched route.
///
/// The label is the route *pattern* (`/v1/licenses/{id}`), never the raw
/// path: raw paths carry ids, which would make cardinality unbounded.
pub(crate) async fn record(
    service: Arc<str>,
    metrics: Metrics,
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let method = method_label(req.method());
    // Matched against the app's route table, so it is known before (and
    // whether or not) the handler runs.
    let route = req
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let result = next.call(req).await;
    let status = match &result {
        Ok(res) => res.status(),
        Err(err) => err.as_response_error().status_code(),
    };
    let status = status.as_u16().to_string();
    metrics.inc_counter(
        HTTP_REQUESTS,
        &[
            ("service", &service),
            ("method", method),
            ("route", &route),
            ("status", &status),
        ],
        1,
    );
    metrics.observe_histogram(
        HTTP_DURATION,
        &[("service", &service), ("method", method), ("route", &route)],
        started.elapsed().as_secs_f64(),
    );
    result
}

/// A method as a label: the standard ones by name, any other (actix takes
/// invented methods of up to ~128 KB) as `OTHER`, so no caller can add a
/// series.
fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Middleware, innermost: a handler that panics answers 500 `INTERNAL`
/// for its own request (counted in `http_panics_total`, logged with the
/// panic's message) instead of dropping the connection.
pub(crate) async fn contain_panics(
    service: Arc<str>,
    metrics: Metrics,
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    use futures::FutureExt;
    // The request cannot be kept aside (routing needs it unshared), so the
    // answer is an error, which actix renders without it.
    let path = req.path().to_owned();
    match std::panic::AssertUnwindSafe(next.call(req))
        .catch_unwind()
        .await
    {
        Ok(result) => result,
        Err(panic) => {
            tracing::error!(path = %path, panic = %bus::panic_message(&*panic), "handler panicked");
            metrics.inc_counter(HTTP_PANICS, &[("service", &service)], 1);
            Err(crate::Problem::internal().into())
        }
    }
}

/// `GET /metrics`.
pub(crate) async fn handler(metrics: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(CONTENT_TYPE)
        .body(metrics.render())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn renders_exposition_format() {
        let m = Metrics::new();
        m.describe("jobs_total", "Jobs done.");
        m.inc_counter("jobs_total", &[("kind", "a\"b\\c\nd")], 2);
        m.inc_counter("jobs_total", &[("kind", "a\"b\\c\nd")], 3);
        m.set_gauge("lag", &[], -4);
        m.observe_histogram("dur_seconds", &[("op", "x")], 0.003);
        m.observe_histogram("dur_seconds", &[("op", "x")], 42.0);
        // Wrong type for an existing family: ignored.
        m.set_gauge("jobs_total", &[("kind", "z")], 1);
        let text = m.render();
        assert!(text.contains("# HELP jobs_total Jobs done.\n# TYPE jobs_total counter\n"));
        assert!(
            text.contains("jobs_total{kind=\"a\\\"b\\\\c\\nd\"} 5\n"),
            "{text}"
        );
        assert!(!text.contains("kind=\"z\""));
        assert!(text.contains("# TYPE lag gauge\nlag -4\n"));
        assert!(text.contains("# TYPE dur_seconds histogram\n"));
        assert!(text.contains("dur_seconds_bucket{op=\"x\",le=\"0.001\"} 0\n"));
        assert!(text.contains("dur_seconds_bucket{op=\"x\",le=\"0.005\"} 1\n"));
        assert!(text.contains("dur_seconds_bucket{op=\"x\",le=\"10.0\"} 1\n"));
        assert!(text.contains("dur_seconds_bucket{op=\"x\",le=\"+Inf\"} 2\n"));
        assert!(text.contains("dur_seconds_sum{op=\"x\"} 42.003\n"));
        assert!(text.contains("dur_seconds_count{op=\"x\"} 2\n"));
        // Described but never recorded: not rendered.
        assert!(!text.contains("http_requests_total"));
    }
}
