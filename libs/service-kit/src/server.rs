//! Wiring: the App every service runs and the HTTP server around it.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use actix_web::body::BoxBody;
use actix_web::dev::{Server, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpServer};

use contracts::net::Cidr;

use crate::client_addr::TrustedProxies;
use crate::config::CommonConfig;
use crate::health::{self, Readiness, ReadyCheck};
use crate::json::{self, configure_extractors, BodyLimit, DEFAULT_BODY_LIMIT};
use crate::metrics::{self, Metrics};
use crate::{problem, telemetry};

/// What a guard's future answers.
pub type Guarded =
    futures::future::LocalBoxFuture<'static, Result<ServiceResponse<BoxBody>, actix_web::Error>>;

/// The shape of every guard the kit wraps routes in (`from_fn(require(..))`,
/// rate limits): one name for actix's middleware function type.
pub trait Middleware: Fn(ServiceRequest, Next<BoxBody>) -> Guarded + Clone + 'static {}

impl<F> Middleware for F where F: Fn(ServiceRequest, Next<BoxBody>) -> Guarded + Clone + 'static {}

/// Seconds in-flight requests get to finish after a shutdown signal.
const SHUTDOWN_TIMEOUT_SECS: u64 = 10;

/// What the kit needs to know about a service to run it.
#[derive(Debug)]
pub struct ServiceApp {
    name: String,
    metrics: Metrics,
    ready_checks: Vec<ReadyCheck>,
    body_limit: usize,
    handle_signals: bool,
    // Built once from `ready_checks` so that every worker shares one probe
    // per check instead of running its own.
    readiness: OnceLock<Arc<Readiness>>,
    from_memory: Arc<[&'static str]>,
    tls: Option<rustls::ServerConfig>,
    trusted_proxies: TrustedProxies,
}

impl ServiceApp {
    /// A service called `name` (the `service` label of its metrics and the
    /// `service` field of its logs), with no readiness checks and the
    /// default body limit.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            metrics: Metrics::new(),
            ready_checks: Vec::new(),
            body_limit: DEFAULT_BODY_LIMIT,
            handle_signals: true,
            readiness: OnceLock::new(),
            from_memory: Arc::from(Vec::new()),
            tls: None,
            trusted_proxies: TrustedProxies::default(),
        }
    }

    /// [`ServiceApp::new`] with the body limit, TLS and trusted proxies
    /// taken from the config.
    pub fn from_config(name: impl Into<String>, config: &CommonConfig) -> std::io::Result<Self> {
        let app = Self::new(name)
            .with_body_limit(config.max_body_bytes)
            .with_trusted_proxies(config.trusted_proxies.clone());
        Ok(match (&config.tls_cert_file, &config.tls_key_file) {
            (Some(cert), Some(key)) => app.with_tls(tls_config(cert, key)?),
            (None, None) => app,
            _ => {
                return Err(std::io::Error::other(
                    "tls_cert_file and tls_key_file go together",
                ))
            }
        })
    }

    /// Serves HTTPS only, with `tls`.
    pub fn with_tls(mut self, tls: rustls::ServerConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The proxies whose `X-Forwarded-For` names the client
    /// ([`crate::client_addr::client_ip`]).
    pub fn with_trusted_proxies(mut self, proxies: Vec<Cidr>) -> Self {
        self.trusted_proxies = TrustedProxies(proxies.into());
        self
    }

    /// Whether it serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Adds a dependency `/readyz` must reach.
    pub fn with_ready_check(mut self, check: ReadyCheck) -> Self {
        self.ready_checks.push(check);
        self.readiness = OnceLock::new();
        self
    }

    /// Routes answered without the database (see [`health::fail_fast`]):
    /// they are served while it is down.
    pub fn with_routes_from_memory(mut self, paths: &[&'static str]) -> Self {
        self.from_memory = Arc::from(paths.to_vec());
        self
    }

    /// Largest accepted JSON body in bytes (see [`BodyLimit`]).
    pub fn with_body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Uses a registry the caller already records into (e.g. from Kafka
    /// consumers), so `/metrics` shows those too.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Leaves SIGTERM/SIGINT alone. For tests that start many servers in
    /// one process: each server would otherwise install its own handlers
    /// and all of them would stop on one Ctrl-C.
    pub fn disable_signals(mut self) -> Self {
        self.handle_signals = false;
        self
    }

    /// The service name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The registry `/metrics` renders; record service metrics into it.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn readiness(&self) -> Arc<Readiness> {
        Arc::clone(
            self.readiness
                .get_or_init(|| Readiness::start(self.ready_checks.clone())),
        )
    }

    /// The App [`serve`] runs: middleware (correlation id and request log,
    /// metrics, problem+json for every error), `/healthz`, `/readyz`,
    /// `/metrics`, the extractor configs and problem+json 404/405 for requests
    /// no route accepts, plus the service's `routes`.
    ///
    /// Public so tests can drive it with `actix_web::test::init_service`
    /// without binding a port.
    pub fn app<F>(
        &self,
        routes: F,
    ) -> App<
        impl ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<BoxBody>,
            Error = actix_web::Error,
            InitError = (),
        >,
    >
    where
        F: FnOnce(&mut web::ServiceConfig),
    {
        let service: Arc<str> = Arc::from(self.name.as_str());
        let service_for_metrics = Arc::clone(&service);
        let service_for_panics = Arc::clone(&service);
        let metrics = self.metrics.clone();
        let metrics_for_panics = self.metrics.clone();
        let database = self.readiness().database();
        let from_memory = Arc::clone(&self.from_memory);
        App::new()
            .app_data(web::Data::new(self.metrics.clone()))
            .app_data(web::Data::from(self.readiness()))
            .app_data(BodyLimit(self.body_limit))
            .app_data(self.trusted_proxies.clone())
            .configure(configure_extractors)
            .route("/healthz", web::get().to(health::healthz))
            .route("/readyz", web::get().to(health::readyz))
            .route("/metrics", web::get().to(metrics::handler))
            .configure(routes)
            .default_service(web::to(problem::no_route))
            // Last wrapped runs first: correlation sees everything, then
            // metrics, and errors are normalised before either looks; a URL
            // with control characters never reaches the router, a panic
            // never leaves the handler.
            .wrap(from_fn(move |req: ServiceRequest, next: Next<BoxBody>| {
                metrics::contain_panics(
                    Arc::clone(&service_for_panics),
                    metrics_for_panics.clone(),
                    req,
                    next,
                )
            }))
            .wrap(from_fn(move |req: ServiceRequest, next: Next<BoxBody>| {
                health::fail_fast(database.clone(), Arc::clone(&from_memory), req, next)
            }))
            .wrap(from_fn(json::refuse_control_in_url))
            .wrap(from_fn(problem::normalize_errors))
            .wrap(from_fn(move |req: ServiceRequest, next: Next<BoxBody>| {
                metrics::record(Arc::clone(&service_for_metrics), metrics.clone(), req, next)
            }))
            .wrap(from_fn(move |req: ServiceRequest, next: Next<BoxBody>| {
                telemetry::correlate(Arc::clone(&service), req, next)
            }))
    }
}

/// Binds `addr` (port 0 picks a free port) and builds the server.
///
/// Returns the server not yet started, for the caller to spawn or await
/// (e.g. in a `try_join!` with its consumers), and the address actually
/// bound. If `addr` resolves to several addresses, the first bound one is
/// returned. Unless [`ServiceApp::disable_signals`] was used, SIGTERM and
/// SIGINT stop the server gracefully, giving requests 10 s to finish.
pub async fn serve<F>(
    app: ServiceApp,
    addr: &str,
    routes: F,
) -> std::io::Result<(Server, SocketAddr)>
where
    F: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
{
    // Build the shared readiness state before the workers clone the app.
    let _ = app.readiness();
    let handle_signals = app.handle_signals;
    let name = app.name.clone();
    let tls = app.tls.clone();
    let app = Arc::new(app);
    let mut server =
        HttpServer::new(move || app.app(routes.clone())).shutdown_timeout(SHUTDOWN_TIMEOUT_SECS);
    if !handle_signals {
        server = server.disable_signals();
    }
    let server = match tls {
        Some(tls) => server.bind_rustls_0_23(addr, tls)?,
        None => server.bind(addr)?,
    };
    let bound = server.addrs().first().copied().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            format!("{addr} resolved to no address"),
        )
    })?;
    tracing::info!(service = %name, addr = %bound, "http server bound");
    Ok((server.run(), bound))
}

/// A TLS server configuration from PEM files: the certificate chain and its
/// private key (PKCS#8, SEC1 or PKCS#1).
pub fn tls_config(cert_file: &str, key_file: &str) -> std::io::Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, e: &dyn std::fmt::Display| std::io::Error::other(format!("{what}: {e}"));
    let certs = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| bad(cert_file, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert_file, &e))?;
    // The key file's name only: never its content.
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| bad(key_file, &e))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("tls", &e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad(cert_file, &e))
}

/// Completes on SIGTERM or Ctrl-C, for stopping background tasks (Kafka
/// consumers, relays) alongside the HTTP server.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutdown signal received");
}
