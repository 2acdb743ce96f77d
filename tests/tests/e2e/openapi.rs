//! OpenAPI documents (issue 18): every service serves its document openly
//! at `/openapi.json`, as checked in under `schemas/openapi/`, covering
//! every route of the route table with the credentials the table names;
//! and Schemathesis, fuzzing each running service from its document, finds
//! no 5xx and no answer the document does not describe.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use e2e::routes::{self, Svc};
use e2e::*;
use serde_json::Value;

/// `/v1/licenses/{license}/domain` and `/v1/licenses/{id}/domain` alike.
fn template(path: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for c in path.chars() {
        match c {
            '{' => {
                inside = true;
                out.push_str("{}");
            }
            '}' => inside = false,
            _ if inside => {}
            _ => out.push(c),
        }
    }
    out
}

fn checked_in(svc: Svc) -> Value {
    let path = repo_root().join(format!("schemas/openapi/{}.json", svc.name()));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("the checked-in document {}: {e}", path.display()));
    serde_json::from_str(&text).expect("json")
}

async fn assert_document_covers_routes(stack: &Stack, svc: Svc) {
    let url = stack.at(svc, "/openapi.json");
    // Open: no credential.
    let resp = reqwest::get(&url).await.expect("sent");
    assert_eq!(resp.status(), 200, "{url}");
    let served: Value = resp.json().await.expect("json");
    assert_eq!(
        served,
        checked_in(svc),
        "{svc:?} serves the checked-in document"
    );
    assert_eq!(served["openapi"], "3.1.0");
    let paths = served["paths"].as_object().expect("paths");
    let documented: BTreeSet<(String, String)> = paths
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .expect("operations")
                .keys()
                .map(move |m| (m.to_uppercase(), template(path)))
        })
        .collect();
    let table: Vec<routes::Route> = routes::all().into_iter().filter(|r| r.svc == svc).collect();
    assert!(!table.is_empty());
    let missing: Vec<_> = table
        .iter()
        .map(|r| (r.method.to_string(), template(r.path)))
        .filter(|k| !documented.contains(k))
        .collect();
    assert!(
        missing.is_empty(),
        "{svc:?}: routes missing from the document: {missing:?}"
    );
    // Each route's credentials as the table has them: open, an installed
    // product's license (besides an API key), a license client, or an API
    // key's scope.
    for r in &table {
        let (_, ops) = paths
            .iter()
            .find(|(p, _)| template(p) == template(r.path))
            .expect("documented");
        let security = ops[r.method.to_lowercase()]["security"].clone();
        let requirements = security.as_array().cloned().unwrap_or_default();
        let api_key_scopes: Vec<String> = requirements
            .iter()
            .filter_map(|req| req.get("api_key"))
            .flat_map(|scopes| scopes.as_array().cloned().unwrap_or_default())
            .filter_map(|s| s.as_str().map(String::from))
            .collect();
        let what = format!("{svc:?} {} {}: {security}", r.method, r.path);
        match r.scope {
            "open" => assert_eq!(security, serde_json::json!([{}]), "{what}"),
            "license" | "client" => assert!(
                requirements.iter().any(|req| req
                    .as_object()
                    .is_some_and(|o| o.keys().any(|k| k != "api_key"))),
                "{what}"
            ),
            scope => assert!(api_key_scopes.iter().any(|s| s == scope), "{what}"),
        }
    }
    // And every documented operation is one the service serves: without a
    // credential it answers anything but "no such route".
    let base = stack.url(svc);
    let client = reqwest::Client::new();
    for (method, path) in &documented {
        let url = format!(
            "{base}{}",
            path.replace("{}", &uuid::Uuid::nil().to_string())
        );
        let verb = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let status = client
            .request(verb, &url)
            .send()
            .await
            .expect("sent")
            .status();
        assert!(
            status != 404 && status != 405,
            "{svc:?}: {method} {path} is documented but answers {status}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_service_serves_its_checked_in_document_covering_every_route() {
    let stack = Stack::start(&Svc::ALL).await;
    for svc in Svc::ALL {
        assert_document_covers_routes(&stack, svc).await;
    }
    stack.stop().await;
}

/// Examples per operation: enough to reach every parameter's boundaries
/// and a few random bodies, few enough for the suite's budget.
const EXAMPLES: &str = "15";
/// A run that takes longer than this has hung.
const SCHEMATHESIS_BOUND: Duration = Duration::from_secs(300);

/// Schemathesis (PyPI, installed by `make test`) against `svc`'s served
/// document, as the admin, with `config` as its `schemathesis.toml`: exit
/// status, and what it printed.
fn schemathesis(stack: &Stack, svc: Svc, config: &str) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!("schemathesis-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("schemathesis.toml"), config).expect("config");
    let output = std::fs::File::create(dir.join("output.txt")).expect("output file");
    let mut child = std::process::Command::new("python3")
        .current_dir(&dir)
        .args([
            "-c",
            "import sys; from schemathesis.cli import schemathesis; \
             sys.argv[0] = 'schemathesis'; sys.exit(schemathesis())",
            "run",
            &stack.at(svc, "/openapi.json"),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            EXAMPLES,
            "--seed",
            "18",
            "--workers",
            "1",
            "--request-timeout",
            "20",
            "--no-shrink",
            "--header",
            &format!("Authorization: Bearer {ADMIN_TOKEN}"),
        ])
        .env("NO_COLOR", "1")
        // To a file, not a pipe nobody reads while it runs: a long report
        // would fill the pipe and stall the run.
        .stdout(Stdio::from(output.try_clone().expect("output file")))
        .stderr(Stdio::from(output))
        .spawn()
        .expect("python3 runs (make test installs schemathesis)");
    let deadline = std::time::Instant::now() + SCHEMATHESIS_BOUND;
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = child.wait().expect("wait");
    let text = std::fs::read_to_string(dir.join("output.txt")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        !text.contains("ModuleNotFoundError"),
        "schemathesis missing: run `make python-deps`: {text}"
    );
    (status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schemathesis_finds_no_5xx_and_no_answer_outside_each_document() {
    let stack = Stack::start(&Svc::ALL).await;
    // Routes of a license and of a product reach real ones, not only 404s:
    // positive cases go as deep as a genuine caller's.
    let product = stack
        .product(serde_json::json!({"max_activations": 3}))
        .await;
    let license = stack
        .license(&product, "schemathesis", serde_json::json!({}))
        .await;
    let config = format!(
        "[[operations]]\ninclude-path-regex = '^/v1/licenses/\\{{id\\}}'\n\
         parameters = {{ \"path.id\" = \"{}\" }}\n\
         [[operations]]\ninclude-path-regex = '^/v1/products/\\{{code\\}}'\n\
         parameters = {{ \"path.code\" = \"{product}\" }}\n",
        license.id
    );
    let mut failed = Vec::new();
    for svc in Svc::ALL {
        let (ok, text) = tokio::task::block_in_place(|| schemathesis(&stack, svc, &config));
        eprintln!("--- schemathesis, {}:\n{text}", svc.name());
        if !ok {
            failed.push(svc.name());
        }
    }
    stack.stop().await;
    assert!(
        failed.is_empty(),
        "schemathesis failed for {failed:?} (output above)"
    );
}
