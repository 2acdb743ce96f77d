//! Every route of every service, with a well-formed sample request: the
//! table hostile-input tests walk (NUL bytes in every text, the seeded
//! fuzzer) and access tests check.
//!
//! Paths hold placeholders (`{license}`, `{activation}`, …) that
//! [`Targets::fill`] replaces with real ids from the test's own data, so a
//! mutated request reaches as deep into a handler as a genuine one would.

use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Svc {
    Issuance,
    Activation,
    Domain,
    Grants,
    Projector,
}

impl Svc {
    pub const ALL: [Svc; 5] = [
        Svc::Issuance,
        Svc::Activation,
        Svc::Domain,
        Svc::Grants,
        Svc::Projector,
    ];

    /// The service's name: its binary, crate and OpenAPI document
    /// (`schemas/openapi/<name>.json`).
    pub fn name(self) -> &'static str {
        match self {
            Svc::Issuance => "issuance",
            Svc::Activation => "activation",
            Svc::Domain => "domain-binding",
            Svc::Grants => "grant-sync",
            Svc::Projector => "projector",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub svc: Svc,
    pub method: &'static str,
    pub path: &'static str,
    /// The scope it needs, `open`, or `client` (grant sync's license
    /// clients) or `license` (an installed product's license credential).
    pub scope: &'static str,
    pub query: Vec<(&'static str, String)>,
    pub body: Option<Value>,
}

fn r(
    svc: Svc,
    method: &'static str,
    path: &'static str,
    scope: &'static str,
    body: Option<Value>,
) -> Route {
    Route {
        svc,
        method,
        path,
        scope,
        query: vec![],
        body,
    }
}

fn q(mut route: Route, query: &[(&'static str, &str)]) -> Route {
    route.query = query.iter().map(|(k, v)| (*k, v.to_string())).collect();
    route
}

/// A device's hardware as installed products report it.
pub fn device(n: u32) -> Value {
    json!({"machine_id": format!("m-{n}"), "disk": format!("d-{n}"),
           "board": format!("b-{n}"), "mac": format!("aa:bb:cc:dd:ee:{n:02x}")})
}

/// Every route, with sample requests.
pub fn all() -> Vec<Route> {
    use Svc::*;
    let policy = json!({"max_activations": 3, "trial_days": 30});
    vec![
        // issuance
        r(
            Issuance,
            "POST",
            "/v1/products",
            "admin",
            Some(json!({
                "code": "fuzz-product", "name": "Fuzz Product", "editions": ["standard"],
                "features": [{"code": "alpha", "name": "Alpha"}, {"code": "beta", "name": "Beta"}],
                "bundles": [{"code": "suite", "name": "Suite", "requires": ["alpha"], "optional": ["beta"]}],
                "policy": policy, "edition_policies": {"standard": policy},
            })),
        ),
        r(Issuance, "GET", "/v1/products/{code}", "issuer", None),
        r(
            Issuance,
            "PUT",
            "/v1/products/{code}/policy",
            "admin",
            Some(json!({"edition": "enterprise", "policy": policy})),
        ),
        r(
            Issuance,
            "POST",
            "/v1/licenses",
            "issuer",
            Some(json!({
                "product": "integration-platform", "edition": "enterprise", "customer": "ACME Corp",
                "contract": "C-1", "kind": "formal", "modules": [],
                "features": ["datasource-mgmt", "data-access"], "seats": {"data-access": 2},
                "expires_at": "2031-01-01T00:00:00Z",
            })),
        ),
        r(
            Issuance,
            "POST",
            "/v1/licenses/recover",
            "issuer",
            Some(json!({"contract": "C-1"})),
        ),
        r(
            Issuance,
            "POST",
            "/v1/licenses/lookup",
            "issuer",
            Some(json!({"key": "{license_key}"})),
        ),
        r(Issuance, "GET", "/v1/licenses/{license}", "issuer", None),
        r(Issuance, "DELETE", "/v1/licenses/{license}", "issuer", None),
        r(
            Issuance,
            "POST",
            "/v1/licenses/{license}/renew",
            "issuer",
            Some(json!({"expires_at": "2032-01-01T00:00:00Z", "order_ref": "PO-1"})),
        ),
        r(
            Issuance,
            "POST",
            "/v1/licenses/{license}/features",
            "issuer",
            Some(json!({"modules": [], "features": ["datasource-mgmt"]})),
        ),
        r(
            Issuance,
            "POST",
            "/v1/licenses/{license}/suspend",
            "issuer",
            Some(json!({"reason": "unpaid invoice"})),
        ),
        r(
            Issuance,
            "POST",
            "/v1/licenses/{license}/reinstate",
            "issuer",
            None,
        ),
        r(
            Issuance,
            "POST",
            "/v1/licenses/{license}/revoke",
            "issuer",
            Some(json!({"reason": "fraud"})),
        ),
        r(Issuance, "GET", "/v1/commands/{command}", "issuer", None),
        r(
            Issuance,
            "POST",
            "/v1/api-keys",
            "admin",
            Some(json!({"scopes": ["issuer"], "allowlist": ["10.0.0.0/8"],
                        "callback_url": "https://crm.example/hook", "remark": "crm"})),
        ),
        r(Issuance, "GET", "/v1/api-keys/{key}", "admin", None),
        r(Issuance, "POST", "/v1/api-keys/{key}/revoke", "admin", None),
        r(Issuance, "POST", "/v1/api-keys/{key}/rotate", "admin", None),
        r(
            Issuance,
            "PUT",
            "/v1/api-keys/{key}/allowlist",
            "admin",
            Some(json!({"allowlist": ["192.0.2.0/24"]})),
        ),
        r(
            Issuance,
            "PUT",
            "/v1/api-keys/{key}/callback",
            "admin",
            Some(json!({"callback_url": "https://crm.example/hook2",
                        "callback_events": ["LicenseIssued", "LicenseRevoked"]})),
        ),
        r(
            Issuance,
            "DELETE",
            "/v1/api-keys/{key}/callback",
            "admin",
            None,
        ),
        q(
            r(
                Issuance,
                "GET",
                "/v1/api-keys/{key}/deliveries",
                "admin",
                None,
            ),
            &[("limit", "10")],
        ),
        r(
            Issuance,
            "POST",
            "/v1/api-keys/{key}/deliveries/{delivery}/redeliver",
            "admin",
            None,
        ),
        r(Issuance, "POST", "/v1/admin/checkpoints", "admin", None),
        // activation
        r(
            Activation,
            "POST",
            "/v1/activations",
            "license",
            Some(
                json!({"license_key": "{license_key}", "fingerprint": device(1),
                         "client_time": "2026-06-01T00:00:00Z"}),
            ),
        ),
        r(
            Activation,
            "POST",
            "/v1/activations/offline",
            "license",
            Some(
                json!({"license_key": "{license_key}", "fingerprint": device(2),
                        "nonce": "n-1", "client_time": "2026-06-01T00:00:00Z"}),
            ),
        ),
        r(
            Activation,
            "POST",
            "/v1/activations/search",
            "license",
            Some(json!({"fingerprint": device(1)})),
        ),
        r(
            Activation,
            "POST",
            "/v1/activations/verify",
            "license",
            Some(json!({"activation_file": "{file}"})),
        ),
        r(
            Activation,
            "GET",
            "/v1/activations/{activation}",
            "license",
            None,
        ),
        r(
            Activation,
            "GET",
            "/v1/activations/{activation}/file",
            "license",
            None,
        ),
        r(
            Activation,
            "POST",
            "/v1/activations/{activation}/uninstall",
            "license",
            None,
        ),
        r(
            Activation,
            "POST",
            "/v1/activations/{activation}/migrate",
            "license",
            Some(json!({"fingerprint": device(3), "client_time": "2026-06-01T00:00:00Z"})),
        ),
        r(
            Activation,
            "GET",
            "/v1/licenses/{license}/activations",
            "license",
            None,
        ),
        r(
            Activation,
            "POST",
            "/v1/trials",
            "activator",
            Some(
                json!({"product": "integration-platform", "fingerprint": device(4),
                        "client_time": "2026-06-01T00:00:00Z"}),
            ),
        ),
        r(Activation, "GET", "/v1/trials/{trial}", "activator", None),
        r(
            Activation,
            "POST",
            "/v1/validate",
            "license",
            Some(
                json!({"license_key": "{license_key}", "fingerprint": device(1),
                        "features": ["data-access"], "client_time": "2026-06-01T00:00:00Z"}),
            ),
        ),
        r(Activation, "POST", "/v1/admin/checkpoints", "admin", None),
        // domain binding
        q(
            r(Domain, "GET", "/v1/registrable-domain", "issuer", None),
            &[("host", "www.example.co.uk")],
        ),
        r(
            Domain,
            "GET",
            "/v1/licenses/{license}/domain",
            "issuer",
            None,
        ),
        r(
            Domain,
            "PUT",
            "/v1/licenses/{license}/domain",
            "issuer",
            Some(json!({"domain": "shop.example.com"})),
        ),
        r(
            Domain,
            "DELETE",
            "/v1/licenses/{license}/domain",
            "domain-admin",
            Some(json!({"reason": "customer moved"})),
        ),
        r(
            Domain,
            "POST",
            "/v1/licenses/{license}/domain/change",
            "issuer",
            Some(json!({"domain": "example.org", "accept_fee": true})),
        ),
        q(
            r(Domain, "GET", "/v1/domain-check", "license", None),
            &[("license_key", "{license_key}"), ("host", "a.example.com")],
        ),
        q(
            r(Domain, "GET", "/v1/license-query", "open", None),
            &[("domain", "example.com")],
        ),
        r(Domain, "POST", "/v1/admin/checkpoints", "admin", None),
        // grant sync
        r(
            Grants,
            "POST",
            "/v1/clients",
            "issuer",
            // A callback_url needs admin (PUT …/callback below).
            Some(json!({"name": "plant 7", "licenses": ["{license}"],
                        "allowlist": ["127.0.0.1"]})),
        ),
        r(Grants, "GET", "/v1/clients/me", "client", None),
        r(Grants, "GET", "/v1/clients/{client}", "issuer", None),
        r(
            Grants,
            "POST",
            "/v1/clients/{client}/revoke",
            "issuer",
            Some(json!({"reason": "decommissioned"})),
        ),
        r(
            Grants,
            "PUT",
            "/v1/clients/{client}/callback",
            "admin",
            Some(json!({"callback_url": "https://plant.example/hook",
                        "callback_events": ["LeaseExpired"]})),
        ),
        r(
            Grants,
            "DELETE",
            "/v1/clients/{client}/callback",
            "admin",
            None,
        ),
        q(
            r(
                Grants,
                "GET",
                "/v1/clients/{client}/deliveries",
                "admin",
                None,
            ),
            &[("limit", "10")],
        ),
        r(
            Grants,
            "POST",
            "/v1/clients/{client}/deliveries/{delivery}/redeliver",
            "admin",
            None,
        ),
        r(Grants, "GET", "/v1/catalog", "client", None),
        r(
            Grants,
            "POST",
            "/v1/sync",
            "client",
            Some(json!({"cursor": null, "client_time": "2026-06-01T00:00:00Z", "wait_ms": 0})),
        ),
        r(
            Grants,
            "POST",
            "/v1/leases",
            "client",
            Some(
                json!({"license_id": "{license}", "feature": "data-access", "quantity": 1,
                        "client_time": "2026-06-01T00:00:00Z"}),
            ),
        ),
        r(Grants, "GET", "/v1/leases/{lease}", "client", None),
        r(Grants, "DELETE", "/v1/leases/{lease}", "client", None),
        r(
            Grants,
            "POST",
            "/v1/leases/{lease}/heartbeat",
            "client",
            Some(json!({"client_time": "2026-06-01T00:00:00Z"})),
        ),
        r(
            Grants,
            "GET",
            "/v1/licenses/{license}/leases",
            "issuer",
            None,
        ),
        r(
            Grants,
            "POST",
            "/v1/upstreams",
            "admin",
            Some(json!({"name": "vendor", "member_id": "{client}",
                        "endpoint": "https://vendor.example/", "secret": "SC1.secret",
                        "price_protection": false, "remark": "pool", "allow_insecure_http": false})),
        ),
        r(Grants, "GET", "/v1/upstreams/{upstream}", "admin", None),
        r(
            Grants,
            "POST",
            "/v1/upstreams/{upstream}/check",
            "admin",
            None,
        ),
        r(
            Grants,
            "POST",
            "/v1/upstreams/{upstream}/sync",
            "admin",
            Some(json!({"resource": "all"})),
        ),
        r(Grants, "POST", "/v1/admin/checkpoints", "admin", None),
        // projector
        q(
            r(Projector, "GET", "/v1/licenses", "auditor", None),
            &[
                ("status", "active"),
                ("product", "integration-platform"),
                ("customer", "ACME Corp"),
                ("expiring_before", "2040-01-01T00:00:00Z"),
                ("limit", "10"),
            ],
        ),
        r(Projector, "GET", "/v1/licenses/{license}", "auditor", None),
        q(
            r(
                Projector,
                "GET",
                "/v1/licenses/{license}/state",
                "auditor",
                None,
            ),
            &[("as_of", "2026-06-01T00:00:00Z")],
        ),
        r(
            Projector,
            "GET",
            "/v1/licenses/{license}/history",
            "auditor",
            None,
        ),
        r(
            Projector,
            "GET",
            "/v1/licenses/{license}/dispute-bundle",
            "auditor",
            None,
        ),
        r(
            Projector,
            "POST",
            "/v1/licenses/{license}/decisions",
            "auditor",
            Some(json!({"kind": "validation", "at": "2026-06-01T00:00:00Z",
                        "fingerprint": device(1), "features": ["data-access"],
                        "client_time": "2026-06-01T00:00:00Z"})),
        ),
        q(
            r(Projector, "GET", "/v1/checkpoints", "auditor", None),
            &[("context", "issuance")],
        ),
        q(
            r(
                Projector,
                "GET",
                "/v1/checkpoints/consistency",
                "auditor",
                None,
            ),
            &[("context", "issuance"), ("from", "0"), ("to", "0")],
        ),
        q(
            r(Projector, "GET", "/v1/audit", "auditor", None),
            &[
                ("actor", "AKIDtestadmin"),
                ("event_type", "LicenseIssued"),
                ("correlation_id", "c-1"),
                ("from", "2020-01-01T00:00:00Z"),
                ("to", "2040-01-01T00:00:00Z"),
            ],
        ),
        r(
            Projector,
            "POST",
            "/v1/admin/rebuild",
            "admin",
            Some(json!({"models": ["audit_trail"]})),
        ),
        r(Projector, "GET", "/v1/admin/projections", "admin", None),
    ]
}

/// The ids a test's own data gives the placeholders of [`all`]'s paths and
/// bodies.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    pub values: Vec<(&'static str, String)>,
}

impl Targets {
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.values.push((name, value.into()));
        self
    }

    /// `text` with every `{name}` replaced; unknown names get a fresh UUID.
    pub fn fill(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (name, value) in &self.values {
            out = out.replace(&format!("{{{name}}}"), value);
        }
        while let (Some(start), Some(end)) = (out.find('{'), out.find('}')) {
            if end < start {
                break;
            }
            out.replace_range(start..=end, &uuid::Uuid::now_v7().to_string());
        }
        out
    }

    /// A body with every string placeholder filled.
    pub fn fill_value(&self, v: &Value) -> Value {
        match v {
            Value::String(s) if s.starts_with('{') && s.ends_with('}') => {
                Value::String(self.fill(s))
            }
            Value::Array(items) => Value::Array(items.iter().map(|i| self.fill_value(i)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), self.fill_value(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// The paths (`a.b[2]`) of every string leaf of a JSON value.
pub fn string_leaves(v: &Value) -> Vec<String> {
    fn walk(v: &Value, path: String, out: &mut Vec<String>) {
        match v {
            Value::String(_) => out.push(path),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(item, format!("{path}[{i}]"), out);
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(item, p, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, String::new(), &mut out);
    out
}

/// `v` with the string at `path` (as [`string_leaves`] names it) replaced.
pub fn replace_at(v: &Value, path: &str, with: &str) -> Value {
    let mut out = v.clone();
    let mut cur = &mut out;
    for part in split_path(path) {
        cur = match part {
            Part::Key(k) => &mut cur[k.as_str()],
            Part::Index(i) => &mut cur[i],
        };
    }
    *cur = Value::String(with.to_string());
    out
}

enum Part {
    Key(String),
    Index(usize),
}

fn split_path(path: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    for seg in path.split('.') {
        let (key, rest) = seg.split_once('[').unwrap_or((seg, ""));
        if !key.is_empty() {
            parts.push(Part::Key(key.to_string()));
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            if let Ok(i) = idx.trim_end_matches(']').parse() {
                parts.push(Part::Index(i));
            }
        }
    }
    parts
}
