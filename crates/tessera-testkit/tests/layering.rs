//! The layering invariant of docs/ARCHITECTURE.md, enforced: every normal (and build)
//! dependency between workspace crates points down
//! tessera-core → tessera-store → tessera-app → (tessera-grpc, tessera-web) → tessera-server →
//! tessera, with tessera-proto below tessera-grpc and tessera-client. Dev-dependencies are free.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// Each workspace crate and the workspace crates it may depend on (normal and build
/// dependencies). The transports call the app, never the store. A new crate goes here.
const ALLOWED: &[(&str, &[&str])] = &[
    ("tessera-core", &[]),
    ("tessera-store", &["tessera-core"]),
    ("tessera-app", &["tessera-core", "tessera-store"]),
    ("tessera-proto", &[]),
    ("tessera-grpc", &["tessera-core", "tessera-app", "tessera-proto"]),
    ("tessera-web", &["tessera-core", "tessera-app"]),
    ("tessera-client", &["tessera-proto"]),
    (
        "tessera-server",
        &["tessera-core", "tessera-store", "tessera-app", "tessera-proto", "tessera-grpc", "tessera-web"],
    ),
    (
        "tessera",
        &[
            "tessera-core",
            "tessera-store",
            "tessera-app",
            "tessera-proto",
            "tessera-grpc",
            "tessera-web",
            "tessera-server",
        ],
    ),
];

/// Leaves: they may depend on any workspace crate, and no crate may depend on them (no table
/// entry names them).
const LEAVES: &[&str] = &["tessera-bench", "tessera-testkit"];

const RULE: &str = "core → store → app → (grpc, web) → server → tessera; proto below grpc and client; \
                    client on proto only; bench and testkit are leaves (docs/ARCHITECTURE.md)";

fn metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let out = Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--manifest-path"])
        .arg(&manifest)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo} metadata: {e}"));
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every workspace edge of `meta` that the table does not allow, in words.
fn wrong_edges(meta: &serde_json::Value) -> Vec<String> {
    let packages = meta["packages"].as_array().unwrap();
    let members: BTreeSet<&str> = packages.iter().map(|p| p["name"].as_str().unwrap()).collect();
    let mut wrong = Vec::new();
    for p in packages {
        let from = p["name"].as_str().unwrap();
        if LEAVES.contains(&from) {
            continue;
        }
        let Some((_, allowed)) = ALLOWED.iter().find(|(c, _)| *c == from) else {
            wrong.push(format!("{from} is in neither ALLOWED nor LEAVES: place it in the layering table"));
            continue;
        };
        for d in p["dependencies"].as_array().unwrap() {
            let to = d["name"].as_str().unwrap();
            let kind = d["kind"].as_str().unwrap_or("normal");
            if members.contains(to) && kind != "dev" && !allowed.contains(&to) {
                wrong.push(format!(
                    "{from} → {to} ({kind} dependency) is not allowed; {from} may depend on {allowed:?}"
                ));
            }
        }
    }
    wrong
}

#[test]
fn workspace_dependencies_point_down() {
    let meta = metadata();
    let packages = meta["packages"].as_array().unwrap();
    let members: BTreeSet<&str> = packages.iter().map(|p| p["name"].as_str().unwrap()).collect();
    let named = ALLOWED.iter().flat_map(|(c, deps)| std::iter::once(c).chain(deps.iter())).chain(LEAVES);
    for c in named {
        assert!(members.contains(c), "the layering table names {c}, which is not a workspace crate");
    }
    let wrong = wrong_edges(&meta);
    assert!(wrong.is_empty(), "layering broken:\n  {}\nthe rule: {RULE}", wrong.join("\n  "));
    let edges = packages
        .iter()
        .flat_map(|p| p["dependencies"].as_array().unwrap())
        .filter(|d| members.contains(d["name"].as_str().unwrap()));
    assert!(edges.count() > 10, "too few workspace edges: is cargo metadata's output what this test reads?");
}

/// The check itself: an edge up, a sideways one and an unplaced crate are named; a
/// dev-dependency up and a leaf's dependency are not.
#[test]
fn an_upward_edge_is_named() {
    let dep = |name: &str, kind: Option<&str>| serde_json::json!({ "name": name, "kind": kind });
    let meta = serde_json::json!({ "packages": [
        { "name": "tessera-core", "dependencies": [] },
        { "name": "tessera-store", "dependencies": [dep("tessera-core", None), dep("tessera-testkit", Some("dev"))] },
        { "name": "tessera-app", "dependencies": [dep("tessera-store", None)] },
        { "name": "tessera-web", "dependencies": [dep("tessera-app", None), dep("tessera-store", None)] },
        { "name": "tessera-grpc", "dependencies": [dep("tessera-web", None)] },
        { "name": "tessera-testkit", "dependencies": [dep("tessera", None)] },
        { "name": "tessera", "dependencies": [] },
        { "name": "tessera-new", "dependencies": [] },
    ]});
    let wrong = wrong_edges(&meta);
    assert_eq!(wrong.len(), 3, "{wrong:#?}");
    assert!(wrong[0].starts_with("tessera-web → tessera-store (normal dependency) is not allowed"), "{}", wrong[0]);
    assert!(wrong[1].starts_with("tessera-grpc → tessera-web (normal dependency)"), "{}", wrong[1]);
    assert!(wrong[2].starts_with("tessera-new is in neither"), "{}", wrong[2]);
}
