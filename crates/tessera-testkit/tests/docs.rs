//! docs/SECURITY.md maps each ASVS requirement to the tests that show it, named
//! `file::function`. A renamed or moved test must take its rows along: this fails when a name
//! there matches no `fn` in a workspace file whose path ends with that file name.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The `file.rs::function` names inside backticks.
fn named_tests(doc: &str) -> Vec<(String, String)> {
    let mut names = Vec::new();
    for (i, span) in doc.split('`').enumerate() {
        if i % 2 == 0 {
            continue; // outside backticks
        }
        let Some((file, function)) = span.split_once("::") else { continue };
        let is_ident = !function.is_empty() && function.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if file.ends_with(".rs") && is_ident {
            names.push((file.to_owned(), function.to_owned()));
        }
    }
    names
}

#[test]
fn every_test_security_md_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let doc = std::fs::read_to_string(root.join("docs/SECURITY.md")).unwrap();
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    let names = named_tests(&doc);
    assert!(names.len() > 50, "the parser found only {} names", names.len());
    let mut missing = Vec::new();
    for (file, function) in &names {
        let suffix = format!("/{file}");
        let found = files.iter().filter(|p| p.to_string_lossy().ends_with(&suffix)).any(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            text.contains(&format!("fn {function}(")) || text.contains(&format!("fn {function}<"))
        });
        if !found {
            missing.push(format!("{file}::{function}"));
        }
    }
    assert!(missing.is_empty(), "docs/SECURITY.md names tests that do not exist: {missing:#?}");
}

#[test]
fn the_parser_reads_names_in_backticks_only() {
    let names = named_tests("a `x.rs::f_1` b x.rs::g `not::this` `y.rs::h i`");
    assert_eq!(names, [("x.rs".to_owned(), "f_1".to_owned())]);
}
