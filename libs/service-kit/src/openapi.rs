//! What every service's OpenAPI document shares: the security schemes, the
//! problem answers by kind, and the routes the platform serves for every
//! service (health, readiness, metrics, JWKS, on-demand checkpoints, the
//! document itself). A service's document adds its own routes and applies
//! [`Common`].

use std::collections::BTreeMap;

use utoipa::openapi::path::{HttpMethod, OperationBuilder};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder, ResponsesBuilder};

/// problem+json answers of the given statuses.
pub fn problems(list: &[(&str, &str)]) -> BTreeMap<String, RefOr<Response>> {
    list.iter()
        .map(|(status, description)| {
            let content = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build();
            (
                (*status).to_owned(),
                ResponseBuilder::new()
                    .description(*description)
                    .content(crate::problem::PROBLEM_JSON, content)
                    .build()
                    .into(),
            )
        })
        .collect()
}

/// Declares groups of problem answers (`Name => [("409", "why"), …];`),
/// each usable in `#[utoipa::path(responses(…))]`; a service declares its
/// own beside these shared ones.
#[macro_export]
macro_rules! problem_responses {
    ($($name:ident => [$(($status:literal, $text:literal $(,)?)),+ $(,)?];)+) => {$(
        #[doc = concat!("Problem answers: ", $($status, " ",)+)]
        pub struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> std::collections::BTreeMap<
                String,
                utoipa::openapi::RefOr<utoipa::openapi::Response>,
            > {
                $crate::openapi::problems(&[$(($status, $text)),+])
            }
        }
    )+};
}

crate::problem_responses! {
    Invalid => [
        ("400", "The request cannot be read: a malformed body, query or path (`code` and `field` name it)."),
        ("422", "The request is well formed but refused by a rule (`code` and `field` name it)."),
    ];
    Denied => [
        ("401", "No credential, or one that is not valid (`UNAUTHENTICATED`)."),
        ("403", "The credential lacks the scope (`INSUFFICIENT_SCOPE`), its address is not allowed (`ADDRESS_NOT_ALLOWED`), or it does not reach this license."),
    ];
    NotFound => [("404", "No such license or resource (`NOT_FOUND`, or the domain's own code).")];
    Conflict => [("409", "The state refuses the command (the domain's code names why).")];
    PaymentRequired => [("402", "A fee applies and was not accepted (`FEE_NOT_ACCEPTED`).")];
    RateLimited => [("429", "Too many requests from this address (`RATE_LIMITED`, with `Retry-After`).")];
    Body => [
        ("413", "The body is larger than the service takes (`BODY_TOO_LARGE`)."),
        ("415", "The body is not `application/json` (`UNSUPPORTED_MEDIA_TYPE`)."),
    ];
    Unavailable => [
        ("500", "A fault of the service (`INTERNAL`); nothing was changed by it."),
        ("503", "A dependency is unreachable (`STORE_UNAVAILABLE`, `AUTH_UNAVAILABLE`): retry later."),
    ];
}

/// Applies what every service's document shares: [`WRITE_SIDE`] for a
/// service that stores events (it signs checkpoints on demand),
/// [`READ_SIDE`] for the projector.
pub struct Common {
    checkpoints: bool,
}

pub const WRITE_SIDE: Common = Common { checkpoints: true };
pub const READ_SIDE: Common = Common { checkpoints: false };

impl utoipa::Modify for Common {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key, `Authorization: Bearer <id>.<secret>`; each route names \
                         the scopes it accepts, and the `admin` scope reaches every route.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "license",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "An installed product's own license, `Authorization: License <key>`: it \
                 reaches that license only.",
            ))),
        );
        let open = |summary: &str, status: &str, description: &str| {
            OperationBuilder::new()
                .summary(Some(summary))
                .security(utoipa::openapi::security::SecurityRequirement::default())
                .responses(
                    ResponsesBuilder::new()
                        .response(
                            status,
                            ResponseBuilder::new().description(description).build(),
                        )
                        .build(),
                )
                .build()
        };
        let paths = &mut doc.paths;
        paths.add_path_operation(
            "/healthz",
            vec![HttpMethod::Get],
            open("Liveness: the process answers.", "200", "Alive."),
        );
        let mut ready = open(
            "Readiness: its database and broker answer.",
            "200",
            "Ready.",
        );
        ready.responses.responses.extend(problems(&[(
            "503",
            "Not ready: a dependency does not answer (`NOT_READY`).",
        )]));
        paths.add_path_operation("/readyz", vec![HttpMethod::Get], ready);
        paths.add_path_operation(
            "/metrics",
            vec![HttpMethod::Get],
            open(
                "Prometheus metrics, text format 0.0.4.",
                "200",
                "The metrics.",
            ),
        );
        paths.add_path_operation(
            crate::keys::JWKS_PATH,
            vec![HttpMethod::Get],
            open(
                "The service's signing keys (RFC 7517), current and retired.",
                "200",
                "The JWKS.",
            ),
        );
        paths.add_path_operation(
            "/openapi.json",
            vec![HttpMethod::Get],
            open("This document.", "200", "The OpenAPI 3.1 document."),
        );
        if !self.checkpoints {
            return;
        }
        let mut checkpoint = OperationBuilder::new()
            .summary(Some(
                "Signs and publishes a checkpoint of every event committed so far, and answers it.",
            ))
            .security(utoipa::openapi::security::SecurityRequirement::new(
                "api_key",
                ["admin"],
            ))
            .responses(
                ResponsesBuilder::new()
                    .response(
                        "200",
                        ResponseBuilder::new()
                            .description("The signed checkpoint.")
                            .build(),
                    )
                    .build(),
            )
            .build();
        for (status, response) in <Denied as utoipa::IntoResponses>::responses()
            .into_iter()
            .chain(<Unavailable as utoipa::IntoResponses>::responses())
        {
            checkpoint.responses.responses.insert(status, response);
        }
        paths.add_path_operation(
            crate::platform::CHECKPOINTS_PATH,
            vec![HttpMethod::Post],
            checkpoint,
        );
    }
}

/// Fails unless `schemas/openapi/<service>.json` is `doc` and every `$ref`
/// in it resolves; with `UPDATE_OPENAPI` set it rewrites the file first
/// (`UPDATE_OPENAPI=1 cargo test -p <service> openapi`).
pub fn assert_checked_in(doc: utoipa::openapi::OpenApi, service: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../schemas/openapi")
        .join(format!("{service}.json"));
    let generated = doc.to_pretty_json().expect("the document serialises") + "\n";
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).expect("write the document");
    }
    let value: serde_json::Value = serde_json::from_str(&generated).expect("json");
    let mut refs = Vec::new();
    collect_refs(&value, &mut refs);
    assert!(!refs.is_empty(), "a document without references");
    for r in &refs {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or(r);
        assert!(
            value["components"]["schemas"].get(name).is_some(),
            "{r} resolves to nothing"
        );
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "schemas/openapi/{service}.json is not the code's document; \
         regenerate it: UPDATE_OPENAPI=1 cargo test -p {service} openapi"
    );
}

fn collect_refs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v.as_str()) {
                    ("$ref", Some(r)) => out.push(r.to_string()),
                    _ => collect_refs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// `GET /openapi.json`: open, the document serialised once.
pub(crate) fn route(cfg: &mut actix_web::web::ServiceConfig, json: actix_web::web::Bytes) {
    cfg.route(
        "/openapi.json",
        actix_web::web::get().to(move || {
            // A cheap clone: the document is shared, not copied per request.
            let json = json.clone();
            async move {
                actix_web::HttpResponse::Ok()
                    .content_type("application/json")
                    .insert_header(("Cache-Control", "public, max-age=300"))
                    .body(json)
            }
        }),
    );
}

/// The `Idempotency-Key` header of every command route.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct Idempotency {
    /// Makes a retry safe: the same key and request answer the first outcome.
    #[param(rename = "Idempotency-Key", nullable = false)]
    #[allow(dead_code)]
    idempotency_key: Option<uuid::Uuid>,
}

/// The problem codes one route answers beyond those its shape implies
/// (see [`ProblemCodes`]): the refusals of the aggregates its commands
/// reach and its own checks.
pub struct RouteCodes {
    method: &'static str,
    path: &'static str,
    codes: Vec<(u16, &'static str)>,
    not: Vec<(u16, &'static str)>,
}

/// The codes of `method path` (`"post"`, `"/v1/licenses"`).
pub fn codes_of(method: &'static str, path: &'static str) -> RouteCodes {
    RouteCodes {
        method,
        path,
        codes: Vec::new(),
        not: Vec::new(),
    }
}

impl RouteCodes {
    /// Every refusal of an aggregate the route's commands reach, at the
    /// status its kind answers.
    pub fn refusals<E: domain_kit::CodedError>(mut self) -> Self {
        for (code, kind) in E::codes() {
            self.codes
                .push((crate::command::status_of(Some(kind)).as_u16(), code));
        }
        self
    }

    /// Codes the route's own checks answer.
    pub fn codes(mut self, list: &[(u16, &'static str)]) -> Self {
        self.codes.extend_from_slice(list);
        self
    }

    /// Codes the route's shape implies but it cannot answer: a body read
    /// as raw bytes is never refused for its media type, a route served
    /// from memory never answers `STORE_UNAVAILABLE`.
    pub fn not(mut self, list: &[(u16, &'static str)]) -> Self {
        self.not.extend_from_slice(list);
        self
    }
}

/// Writes into every operation's problem answers the exact codes each can
/// carry, as an `enum` on `code` (so a fuzzer checking answers against the
/// document refuses an undeclared one) and in the description. The codes
/// are those the operation's shape implies (its credentials, body,
/// parameters and `Idempotency-Key`, every one the shared layer answers)
/// and those `table` gives for it. Generating the document panics — and
/// with it the service's checked-in document test — when a declared
/// problem status has no code, or when the table names a route the
/// document does not have.
pub struct ProblemCodes {
    pub table: fn() -> Vec<RouteCodes>,
}

const AUTH: &[(u16, &str)] = &[
    (401, "UNAUTHENTICATED"),
    (401, "BAD_CREDENTIALS"),
    (401, "API_KEY_REVOKED"),
    (403, "ADDRESS_NOT_ALLOWED"),
    (403, "INSUFFICIENT_SCOPE"),
    (503, "AUTH_UNAVAILABLE"),
];
const LICENSE_AUTH: &[(u16, &str)] = &[
    (401, "UNAUTHENTICATED"),
    (401, "BAD_CREDENTIALS"),
    (503, "AUTH_UNAVAILABLE"),
];
const BODY: &[(u16, &str)] = &[
    (400, "MALFORMED_JSON"),
    (400, "MALFORMED_BODY"),
    (413, "BODY_TOO_LARGE"),
    (415, "UNSUPPORTED_MEDIA_TYPE"),
    (422, "UNKNOWN_FIELD"),
    (422, "MISSING_FIELD"),
    (422, "INVALID_FIELD"),
];
const COMMAND: &[(u16, &str)] = &[
    (400, "INVALID_IDEMPOTENCY_KEY"),
    (409, "CONCURRENT_MODIFICATION"),
    (422, eventstore::DIGEST_MISMATCH_CODE),
];
/// Every route, the platform's too: a URL decoding to control characters
/// is refused before routing, and a panic is contained as a 500.
const EVERY: &[(u16, &str)] = &[
    (400, "INVALID_PATH"),
    (422, "INVALID_QUERY"),
    (500, "INTERNAL"),
];
/// Every route of the service's own: it needs its database.
const ANY: &[(u16, &str)] = &[(503, "STORE_UNAVAILABLE")];

impl utoipa::Modify for ProblemCodes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use std::collections::BTreeSet;
        use utoipa::openapi::path::ParameterIn;

        type Codes = Vec<(u16, &'static str)>;
        let mut table: BTreeMap<(String, String), (Codes, Codes)> = BTreeMap::new();
        for r in (self.table)() {
            let entry = table
                .entry((r.method.to_owned(), r.path.to_owned()))
                .or_default();
            entry.0.extend(r.codes);
            entry.1.extend(r.not);
        }
        for (path, item) in doc.paths.paths.iter_mut() {
            let operations = [
                ("get", &mut item.get),
                ("put", &mut item.put),
                ("post", &mut item.post),
                ("delete", &mut item.delete),
                ("patch", &mut item.patch),
            ];
            for (method, op) in operations {
                let Some(op) = op else { continue };
                let mut codes: BTreeMap<u16, BTreeSet<&'static str>> = BTreeMap::new();
                let mut add = |list: &[(u16, &'static str)]| {
                    for (status, code) in list {
                        codes.entry(*status).or_default().insert(code);
                    }
                };
                let own = table.remove(&(method.to_owned(), path.clone()));
                let platform = own.is_none() && !path.starts_with("/v1/");
                add(EVERY);
                // Routes served from memory too: what is not in memory yet
                // (a credential, a license) needs the database.
                if !platform || path == crate::keys::JWKS_PATH {
                    add(ANY);
                }
                let schemes: BTreeSet<String> = op
                    .security
                    .iter()
                    .flatten()
                    .filter_map(|r| serde_json::to_value(r).ok())
                    .filter_map(|v| v.as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()))
                    .flatten()
                    .collect();
                if schemes.contains("api_key") {
                    add(AUTH);
                }
                if schemes.contains("license") {
                    add(LICENSE_AUTH);
                }
                if op.request_body.is_some() {
                    add(BODY);
                }
                for p in op.parameters.iter().flatten() {
                    match p.parameter_in {
                        ParameterIn::Path => add(&[(400, "INVALID_PATH")]),
                        ParameterIn::Query => add(&[(422, "INVALID_QUERY")]),
                        ParameterIn::Header if p.name == "Idempotency-Key" => add(COMMAND),
                        _ => {}
                    }
                }
                if path == "/readyz" {
                    add(&[(503, "NOT_READY")]);
                }
                if let Some((own, not)) = own {
                    add(&own);
                    for (status, code) in not {
                        let listed = codes.get_mut(&status).is_some_and(|l| l.remove(code));
                        assert!(listed, "{method} {path}: {status} {code} is not implied");
                        codes.retain(|_, l| !l.is_empty());
                    }
                }
                let responses = &mut op.responses.responses;
                for (status, response) in responses.iter() {
                    let is_problem = matches!(response, RefOr::T(r)
                        if r.content.contains_key(crate::problem::PROBLEM_JSON));
                    let status_code: u16 = status.parse().unwrap_or(0);
                    assert!(
                        !is_problem || codes.contains_key(&status_code),
                        "{method} {path} declares a {status} problem but answers no code there"
                    );
                }
                for (status, list) in codes {
                    let key = status.to_string();
                    let mut response = match responses.remove(&key) {
                        Some(RefOr::T(r)) if r.content.contains_key(crate::problem::PROBLEM_JSON) => r,
                        Some(other) => panic!(
                            "{method} {path} answers {status} as something other than a problem: {}",
                            serde_json::to_string(&other).unwrap_or_default()
                        ),
                        None => ResponseBuilder::new().build(),
                    };
                    let list: Vec<&str> = list.into_iter().collect();
                    let named = list
                        .iter()
                        .map(|c| format!("`{c}`"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    response.description = format!("{} Codes: {named}.", meaning(status));
                    response.content.insert(
                        crate::problem::PROBLEM_JSON.to_owned(),
                        ContentBuilder::new()
                            .schema(Some(coded_problem(&list)))
                            .build(),
                    );
                    responses.insert(key, response.into());
                }
            }
        }
        assert!(
            table.is_empty(),
            "problem codes for routes the document does not have: {:?}",
            table.keys().collect::<Vec<_>>()
        );
    }
}

/// What a problem status means on every route.
fn meaning(status: u16) -> &'static str {
    match status {
        400 => "The request cannot be read: a malformed body, path or header (`field` names it).",
        401 => "No credential, or one that is not valid.",
        402 => "A fee applies and was not accepted.",
        403 => "The credential may not do this, or not from this address.",
        404 => "No such resource.",
        409 => "The state refuses the command now (the code names why).",
        410 => "It has ended for good.",
        413 => "The body is larger than the service takes.",
        415 => "The body is not `application/json`.",
        422 => "Well formed but refused by a rule (`field` names what).",
        429 => "Too many requests from this address: retry after `Retry-After`.",
        500 => "A fault of the service; nothing was changed by it.",
        503 => "A dependency is unreachable: retry later (`Retry-After` when known).",
        _ => "A problem.",
    }
}

/// The `Problem` schema with `code` one of `codes`.
fn coded_problem(codes: &[&str]) -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Type};
    AllOfBuilder::new()
        .item(Ref::from_schema_name("Problem"))
        .item(
            ObjectBuilder::new().property(
                "code",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(codes.iter().copied())),
            ),
        )
        .build()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn, PathItem};
    use utoipa::openapi::request_body::RequestBodyBuilder;
    use utoipa::openapi::security::SecurityRequirement;
    use utoipa::openapi::{OpenApiBuilder, PathsBuilder};
    use utoipa::Modify;

    fn doc(declared: &[(&str, &str)]) -> utoipa::openapi::OpenApi {
        let op = OperationBuilder::new()
            .security(SecurityRequirement::new("api_key", ["issuer"]))
            .request_body(Some(RequestBodyBuilder::new().build()))
            .parameter(
                ParameterBuilder::new()
                    .name("Idempotency-Key")
                    .parameter_in(ParameterIn::Header),
            )
            .responses(ResponsesBuilder::new().responses_from_iter(problems(declared)))
            .build();
        OpenApiBuilder::new()
            .paths(PathsBuilder::new().path("/v1/things", PathItem::new(HttpMethod::Post, op)))
            .build()
    }

    fn codes_at(doc: &utoipa::openapi::OpenApi, status: &str) -> Vec<String> {
        let v = serde_json::to_value(doc).expect("json");
        let schema = &v["paths"]["/v1/things"]["post"]["responses"][status]["content"]
            [crate::problem::PROBLEM_JSON]["schema"];
        schema["allOf"][1]["properties"]["code"]["enum"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|c| c.as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn table() -> Vec<RouteCodes> {
        vec![codes_of("post", "/v1/things")
            .codes(&[(409, "THING_TAKEN"), (404, "THING_NOT_FOUND")])
            .not(&[(415, "UNSUPPORTED_MEDIA_TYPE")])]
    }

    #[test]
    fn each_status_lists_the_shape_the_table_and_the_shared_layer_codes() {
        let mut d = doc(&[("409", "declared")]);
        ProblemCodes { table }.modify(&mut d);
        assert_eq!(
            codes_at(&d, "409"),
            ["CONCURRENT_MODIFICATION", "THING_TAKEN"]
        );
        assert_eq!(codes_at(&d, "404"), ["THING_NOT_FOUND"]);
        assert_eq!(
            codes_at(&d, "401"),
            ["API_KEY_REVOKED", "BAD_CREDENTIALS", "UNAUTHENTICATED"]
        );
        assert_eq!(
            codes_at(&d, "503"),
            ["AUTH_UNAVAILABLE", "STORE_UNAVAILABLE"]
        );
        assert!(codes_at(&d, "400").contains(&"INVALID_IDEMPOTENCY_KEY".to_owned()));
        assert!(codes_at(&d, "415").is_empty(), "removed by `not`");
        let v = serde_json::to_value(&d).expect("json");
        assert!(v["paths"]["/v1/things"]["post"]["responses"]["415"].is_null());
    }

    #[test]
    #[should_panic(expected = "declares a 402 problem but answers no code there")]
    fn a_declared_status_without_a_code_fails_the_document() {
        ProblemCodes { table }.modify(&mut doc(&[("402", "declared")]));
    }

    #[test]
    #[should_panic(expected = "routes the document does not have")]
    fn codes_for_a_route_the_document_lacks_fail_it() {
        fn other() -> Vec<RouteCodes> {
            vec![codes_of("get", "/v1/nothing")]
        }
        ProblemCodes { table: other }.modify(&mut doc(&[]));
    }
}
