//! The README's crate table says which vmkit crates each crate depends on: check it against
//! `cargo metadata`, so it cannot drift from the manifests again.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// `crate -> its vmkit dependencies (normal ones)` from the README's table.
fn readme_table() -> BTreeMap<String, BTreeSet<String>> {
    let readme = include_str!("../README.md");
    let section = readme
        .split("## Crates")
        .nth(1)
        .expect("a Crates section in README.md");
    let mut table = BTreeMap::new();
    for line in section.lines().take_while(|l| !l.starts_with("## ")) {
        let cells: Vec<&str> = line.split(" | ").collect();
        if !line.starts_with("| ") || cells.len() < 3 {
            continue;
        }
        let first = cells[0].trim_start_matches("| ");
        // "[vmkit-pci](crates/vmkit-pci)" or "vmkit-testutil" or "`vmkit` (this directory)".
        let name = first
            .trim_start_matches('[')
            .split(']')
            .next()
            .unwrap_or_default()
            .trim_matches('`')
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .trim_matches('`')
            .to_string();
        if !name.starts_with("vmkit") {
            continue;
        }
        let deps_cell = cells.last().unwrap().trim_end_matches(" |").trim();
        let deps: BTreeSet<String> = match deps_cell {
            "—" => BTreeSet::new(),
            "all" => BTreeSet::from(["*".to_string()]),
            text => text.split(", ").map(|d| d.trim().to_string()).collect(),
        };
        table.insert(name, deps);
    }
    table
}

/// The same from the manifests.
fn metadata() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null())
                .filter_map(|d| d["name"].as_str())
                .filter(|n| n.starts_with("vmkit"))
                .map(String::from)
                .collect();
            (p["name"].as_str().unwrap().to_string(), deps)
        })
        .collect()
}

#[test]
fn the_readme_crate_table_matches_the_manifests() {
    let table = readme_table();
    let actual = metadata();
    for (name, deps) in &actual {
        let listed = table
            .get(name)
            .unwrap_or_else(|| panic!("README.md's crate table has no row for {name}"));
        if listed.contains("*") {
            assert_eq!(name, "vmkit", "only the facade depends on all");
            continue;
        }
        assert_eq!(listed, deps, "README.md's dependency column for {name}");
    }
    for name in table.keys() {
        assert!(
            actual.contains_key(name),
            "README.md lists {name}, which is not a workspace crate"
        );
    }
}
