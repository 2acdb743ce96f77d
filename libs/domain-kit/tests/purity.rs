//! The domains stay pure: no database, broker or HTTP crate in their
//! dependency trees, even transitively. `cargo tree` is the authority, so
//! this also catches a feature of a shared crate that drags one in.

use std::process::Command;

const PURE: &[&str] = &[
    "domain-kit",
    "evidence",
    "issuance-domain",
    "activation-domain",
    "domain-binding-domain",
    "grant-sync-domain",
    "projector-domain",
];

const FORBIDDEN: &[&str] = &[
    "actix-web",
    "actix-http",
    "sqlx",
    "rdkafka",
    "hyper",
    "reqwest",
];

fn normal_tree(package: &str) -> String {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--locked",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .args(["-p", package])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn no_domain_crate_links_the_database_broker_or_http_stack() {
    for package in PURE {
        let tree = normal_tree(package);
        assert!(
            tree.starts_with(package),
            "{package}: unexpected tree {tree}"
        );
        let crates: Vec<&str> = tree.lines().filter_map(|l| l.split(' ').next()).collect();
        for bad in FORBIDDEN {
            assert!(!crates.contains(bad), "{package} depends on {bad}:\n{tree}");
        }
    }
}

#[test]
fn the_check_sees_a_crate_that_does_link_them() {
    // The same reading of the tree finds sqlx under the event store, so an
    // empty answer above is not a broken check.
    let tree = normal_tree("eventstore");
    assert!(tree.lines().any(|l| l.starts_with("sqlx ")), "{tree}");
}
