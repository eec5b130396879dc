//! The shape docs/ARCHITECTURE.md promises, checked from the code's own `crate::` paths:
//! imports between the library's top-level modules point one way (no cycle), and nothing
//! below the command line imports it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Which top-level modules each top-level module uses, with a file that shows it.
fn imports() -> BTreeMap<String, BTreeMap<String, String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let modules: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix("pub mod ")
                .or_else(|| l.strip_prefix("mod "))
                .or_else(|| l.strip_prefix("pub(crate) mod "))
        })
        .map(|m| m.trim_end_matches(';').to_string())
        .collect();
    // Names that lib.rs re-exports from a module (`pub use backup::{BackupOptions, …}`).
    let mut reexported: BTreeMap<String, String> = BTreeMap::new();
    for stmt in lib.split(';') {
        let stmt = stmt.replace('\n', " ");
        let Some(rest) = stmt.trim().strip_prefix("pub use ") else {
            continue;
        };
        let module = rest.split("::").next().unwrap().to_string();
        let names = rest.rsplit("::").next().unwrap();
        for n in names.trim_matches(|c| c == '{' || c == '}').split(',') {
            reexported.insert(n.trim().to_string(), module.clone());
        }
    }
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .to_string();
            let owner = rel
                .split('/')
                .next()
                .unwrap()
                .trim_end_matches(".rs")
                .to_string();
            if !modules.contains(&owner) {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (i, _) in text.match_indices("crate::") {
                let after = &text[i + "crate::".len()..];
                let mut names = Vec::new();
                if let Some(group) = after.strip_prefix('{') {
                    let end = group.find('}').unwrap_or(0);
                    names.extend(group[..end].split(',').map(|n| n.trim().to_string()));
                } else {
                    let end = after
                        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .unwrap_or(after.len());
                    names.push(after[..end].to_string());
                }
                for n in names {
                    let n = n.split("::").next().unwrap_or_default().to_string();
                    let target = reexported.get(&n).cloned().unwrap_or(n);
                    if modules.contains(&target) && target != owner {
                        out.entry(owner.clone())
                            .or_default()
                            .entry(target)
                            .or_insert_with(|| rel.clone());
                    }
                }
            }
        }
    }
    out
}

#[test]
fn the_librarys_modules_import_one_way_and_never_the_command_line() {
    let graph = imports();
    assert!(graph.len() > 10, "the scan found the modules: {graph:?}");
    for (module, uses) in &graph {
        if module != "cli" {
            assert!(
                !uses.contains_key("cli"),
                "{module} imports cli (in {}): the library never decides exit codes or prints",
                uses["cli"]
            );
        }
    }
    // A cycle is a path from a module back to itself.
    fn reach(
        graph: &BTreeMap<String, BTreeMap<String, String>>,
        from: &str,
        to: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for (next, _) in graph.get(from).into_iter().flatten() {
            path.push(next.clone());
            if next == to || (seen.insert(next.clone()) && reach(graph, next, to, path, seen)) {
                return true;
            }
            path.pop();
        }
        false
    }
    for module in graph.keys() {
        let mut path = vec![module.clone()];
        if reach(&graph, module, module, &mut path, &mut BTreeSet::new()) {
            let shown: Vec<String> = path
                .windows(2)
                .map(|w| format!("{} -> {} ({})", w[0], w[1], graph[&w[0]][&w[1]]))
                .collect();
            panic!("import cycle: {}", shown.join(", "));
        }
    }
}

/// Below the command line, errors are types a caller can match on: no function returns
/// `Result<_, String>` (a `String` error is what made a drill branch on the words of a
/// message, and a repository that cannot be opened read as a source that cannot be used).
#[test]
fn below_the_command_line_no_result_carries_a_string_error() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    let mut scanned = 0;
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = e.path();
            let rel = path
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .to_string();
            if rel == "cli" || rel == "cli.rs" || rel == "main.rs" {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            scanned += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                // The error type is the last argument of `Result<…>`: find `, String>` that
                // closes a `Result<`, however the success type nests.
                for (i, _) in line.match_indices("Result<") {
                    let mut depth = 0;
                    let mut last_comma = None;
                    for (j, c) in line[i + "Result<".len()..].char_indices() {
                        match c {
                            '<' | '(' | '[' => depth += 1,
                            '>' | ')' | ']' if depth > 0 => depth -= 1,
                            '>' => {
                                let start = i + "Result<".len();
                                if let Some(k) = last_comma {
                                    if line[start + k + 1..start + j].trim() == "String" {
                                        found.push(format!("src/{rel}:{}: {}", n + 1, line.trim()));
                                    }
                                }
                                break;
                            }
                            ',' if depth == 0 => last_comma = Some(j),
                            _ => {}
                        }
                    }
                }
            }
        }
    }
    assert!(scanned > 50, "the scan found the sources ({scanned} files)");
    assert!(
        found.is_empty(),
        "String errors below cli:\n{}",
        found.join("\n")
    );
}
