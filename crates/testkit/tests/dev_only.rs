//! The test kits stay out of production: every crate names `bookstore-testkit` and
//! `bookstore-testkit-app` in its `[dev-dependencies]` only (`bookstore-testkit-app`, a test kit
//! itself, builds on `bookstore-testkit`), and `bookstore-testkit` depends on no workspace crate
//! but the domain, so that every adapter's tests can use it without a cycle.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

/// The workspace crates a manifest names in each of its sections, as `(section, crate)`.
fn workspace_dependencies(manifest: &str) -> Vec<(String, String)> {
    let mut section = String::new();
    let mut found = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.trim_matches(['[', ']']).to_owned();
        } else if let Some(name) = line.split(['=', '.', ' ']).next() {
            if name.starts_with("bookstore-") && section.contains("dependencies") {
                found.push((section.clone(), name.to_owned()));
            }
        }
    }
    found
}

#[test]
fn only_tests_depend_on_the_test_kits() {
    let crates = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut manifests = 0;
    for entry in std::fs::read_dir(&crates).unwrap() {
        let manifest = entry.unwrap().path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        manifests += 1;
        let package = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("name = "))
            .map(|n| n.trim_matches('"').to_owned())
            .unwrap();
        for (section, name) in workspace_dependencies(&text) {
            let kit = name == "bookstore-testkit" || name == "bookstore-testkit-app";
            let allowed = section == "dev-dependencies"
                || (package == "bookstore-testkit-app" && name == "bookstore-testkit");
            assert!(
                !kit || allowed,
                "{package} names {name} in [{section}]: a test kit goes in [dev-dependencies] only"
            );
            if package == "bookstore-testkit" && section == "dependencies" {
                assert_eq!(
                    name, "bookstore-domain",
                    "bookstore-testkit depends on {name}: it may depend on the domain only, so \
                     that the adapters' tests can use it"
                );
            }
        }
    }
    assert!(manifests > 10, "the workspace's manifests were not found");
}
