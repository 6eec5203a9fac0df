//! The house rules of ARCHITECTURE.md, checked on the source: which module may import which,
//! no import cycle between files, no string tags for outbox kinds, no decisions by matching
//! error text.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every product source file (relative to `src/`) with its product text: what comes before
/// its `#[cfg(test)]` module.
fn sources() -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("source");
                let product = text.split("#[cfg(test)]").next().unwrap_or("").to_string();
                let name = path
                    .strip_prefix(&root)
                    .expect("under src")
                    .display()
                    .to_string();
                files.insert(name, product);
            }
        }
    }
    files
}

/// The module file a path such as `["store", "outbox", "Row"]` lands in, if any.
fn module_file(files: &BTreeMap<String, String>, segments: &[&str]) -> Option<String> {
    let mut found = None;
    for n in 1..=segments.len() {
        let dir = segments[..n].join("/");
        for candidate in [format!("{dir}.rs"), format!("{dir}/mod.rs")] {
            if files.contains_key(&candidate) {
                found = Some(candidate);
            }
        }
    }
    found
}

/// The module path of a file: `store/outbox.rs` -> `["store", "outbox"]`.
fn module_of(file: &str) -> Vec<String> {
    let trimmed = file.trim_end_matches(".rs").trim_end_matches("/mod");
    match trimmed {
        "lib" | "main" => Vec::new(),
        t => t.split('/').map(str::to_string).collect(),
    }
}

/// The files each file imports through `crate::` and `super::` paths (use trees included).
fn imports(files: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph = BTreeMap::new();
    for (file, text) in files {
        let mut targets = BTreeSet::new();
        let here = module_of(file);
        for (at, prefix) in text
            .match_indices("crate::")
            .chain(text.match_indices("super::"))
        {
            let rest = &text[at + prefix.len()..];
            let path: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':' || *c == '{')
                .collect();
            let base: Vec<String> = if prefix == "crate::" {
                Vec::new()
            } else {
                let parent = if file.ends_with("mod.rs") || file == "lib.rs" {
                    here.len().saturating_sub(1)
                } else {
                    here.len() - 1
                };
                here[..parent].to_vec()
            };
            let (head, group) = match path.split_once('{') {
                Some((head, _)) => {
                    let inner = rest[rest.find('{').unwrap_or(0) + 1..]
                        .split('}')
                        .next()
                        .unwrap_or("");
                    (head.to_string(), Some(inner.to_string()))
                }
                None => (path.clone(), None),
            };
            let mut stems: Vec<String> = Vec::new();
            match group {
                Some(inner) => {
                    for part in inner.split(',') {
                        let part = part.trim().split(" as ").next().unwrap_or("").trim();
                        if part == "self" {
                            stems.push(head.clone());
                        } else if !part.is_empty() {
                            stems.push(format!("{head}{part}"));
                        }
                    }
                }
                None => stems.push(head),
            }
            for stem in stems {
                let mut segments: Vec<&str> = base.iter().map(String::as_str).collect();
                segments.extend(stem.split("::").filter(|s| !s.is_empty()));
                if let Some(target) = module_file(files, &segments) {
                    if &target != file {
                        targets.insert(target);
                    }
                }
            }
        }
        // A module file also reaches its own children by their bare names (`migrate::run`).
        for line in text.lines() {
            let decl = line.trim().trim_start_matches("pub ");
            let Some(child) = decl.strip_prefix("mod ").and_then(|c| c.strip_suffix(';')) else {
                continue;
            };
            let used = text.match_indices(&format!("{child}::")).any(|(at, _)| {
                !text[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':')
            });
            let mut segments: Vec<&str> = here.iter().map(String::as_str).collect();
            segments.push(child);
            if let (true, Some(target)) = (used, module_file(files, &segments)) {
                targets.insert(target);
            }
        }
        graph.insert(file.clone(), targets);
    }
    graph
}

fn imported_by<'a>(
    graph: &'a BTreeMap<String, BTreeSet<String>>,
    dir: &str,
) -> Vec<(&'a str, &'a str)> {
    graph
        .iter()
        .filter(|(file, _)| file.starts_with(dir))
        .flat_map(|(file, targets)| targets.iter().map(move |t| (file.as_str(), t.as_str())))
        .collect()
}

#[test]
fn data_walks_one_way() {
    let graph = imports(&sources());
    for (file, target) in imported_by(&graph, "store/") {
        assert!(
            !target.starts_with("butler/") && !target.starts_with("sync/"),
            "{file} imports {target}: the store knows nothing of the sink or of syncing"
        );
    }
    for (file, target) in imported_by(&graph, "butler/") {
        assert!(
            !target.starts_with("store/") && !target.starts_with("sync/"),
            "{file} imports {target}: the sink takes neutral items (item.rs)"
        );
    }
    // The source meets the store in sync/; the store meets the sink in deliver.rs.
    for (file, target) in imported_by(&graph, "sync/") {
        assert!(
            !["deliver.rs", "app.rs"].contains(&target) && !target.starts_with("butler/"),
            "{file} imports {target}: sync/ takes its parts (client, store, config), never the sink"
        );
    }
    let allowed = ["config/mod.rs", "metrics.rs", "net.rs"];
    for (file, target) in imported_by(&graph, "buildkite/") {
        assert!(
            target.starts_with("buildkite/") || allowed.contains(&target),
            "{file} imports {target}: the source uses only config, metrics and net"
        );
    }
    // A scrape never waits for SQLite: the metrics server reads only the metrics.
    for (file, target) in imported_by(&graph, "metrics_server.rs") {
        assert_eq!(
            target, "metrics.rs",
            "{file} imports {target}: the metrics server reads only the metrics"
        );
    }
    // The delivery loops of every mode live in deliver.rs.
    for (file, text) in sources() {
        for needle in ["fn deliver_loop", "fn drain", "fn deliver_all"] {
            assert!(
                !text.contains(needle) || file == "deliver.rs",
                "{needle} in {file}"
            );
        }
    }
}

#[test]
fn no_import_cycle_between_files() {
    let graph = imports(&sources());
    // Depth-first search; a file met again while still on the path closes a cycle.
    fn visit(
        file: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if done.contains(file) {
            return;
        }
        if let Some(at) = path.iter().position(|f| f == file) {
            panic!("import cycle: {} -> {file}", path[at..].join(" -> "));
        }
        path.push(file.to_string());
        for next in graph.get(file).into_iter().flatten() {
            visit(next, graph, path, done);
        }
        path.pop();
        done.insert(file.to_string());
    }
    let mut done = BTreeSet::new();
    for file in graph.keys() {
        visit(file, &graph, &mut Vec::new(), &mut done);
    }
    assert!(
        graph.values().any(|t| !t.is_empty()),
        "the import graph was read"
    );
}

#[test]
fn kinds_are_types_and_errors_are_fields() {
    for (file, text) in sources() {
        // The kinds' names live in item.rs; migration 6 converts 0.1's rows by name.
        if file != "item.rs" && file != "store/migrate.rs" {
            for tag in ["kind = 'build'", "kind: \"", "== \"build\"", "\"tests\" =>"] {
                assert!(!text.contains(tag), "{file} uses a string tag: {tag}");
            }
        }
        for matched in ["contains(\"(4", "starts_with(\"malformed"] {
            assert!(
                !text.contains(matched),
                "{file} decides by error text: {matched}"
            );
        }
        for (at, _) in text.match_indices("serde_json::to_string") {
            let call = &text[at..(at + 120).min(text.len())];
            let call = call.split(';').next().unwrap_or("");
            assert!(
                !call.contains("unwrap_or_default"),
                "{file} may queue an empty payload when encoding fails: {call}"
            );
        }
    }
}

#[test]
fn the_checks_read_real_imports() {
    // Guards the guard: known imports are found.
    let graph = imports(&sources());
    let of = |f: &str| graph.get(f).cloned().unwrap_or_default();
    assert!(of("butler/client.rs").contains("item.rs"));
    assert!(of("store/outbox.rs").contains("store/state.rs"));
    assert!(of("sync/enrich/pass.rs").contains("sync/enrich/test_results.rs"));
    assert!(of("metrics_server.rs").contains("metrics.rs"));
    assert!(
        of("main.rs").is_empty(),
        "main.rs uses the library by its crate name"
    );
    assert!(
        of("store/mod.rs").contains("store/migrate.rs"),
        "children by bare name"
    );
    let _ = PathBuf::new();
}
