//! The structure `docs/architecture.md` promises, checked on the source: a module of `src/`
//! imports only from layers below its own, no two files import each other, and no file of
//! `src/` is longer than a reader takes in at one sitting. Imports are read as text (every
//! `crate::name` outside comments and test modules), which is all the rule needs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers of `src/`, lowest first; a module may import only from layers before its own.
/// `docs/architecture.md` says what each holds. A new top-level module must be placed here.
const LAYERS: &[&[&str]] = &[
    &["error"],
    &[
        "progress",
        "plain_types",
        "toml_files",
        "timing",
        "secret",
        "http_serve",
    ],
    &["output", "metrics"],
    &["lake"],
    &["catalog"],
    &["cluster"],
    &["query"],
    &["serving", "sources", "records"],
    &[
        "pipeline",
        "intake",
        "flight",
        "postgres_wire",
        "report",
        "demo",
    ],
    &["schedule"],
    &["config"],
    &["cli"],
];

/// The longest file `src/` may hold, in lines.
const MAX_LINES: usize = 600;

/// The source of one file: its path under `src/` and its text.
struct File {
    path: String,
    text: String,
}

fn source_files() -> Vec<File> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<File>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(root).unwrap().to_string_lossy();
                out.push(File {
                    path: relative.replace('\\', "/"),
                    text: std::fs::read_to_string(&path).unwrap(),
                });
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&root, &root, &mut files);
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

/// The code of a file without comments and without its test module (by convention the
/// `#[cfg(test)]` module closes a file).
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level module a file belongs to (`query` for `query/rules/join_order/mod.rs`).
fn module_of(path: &str) -> &str {
    let first = path.split('/').next().unwrap_or(path);
    first.strip_suffix(".rs").unwrap_or(first)
}

/// Every path named after `crate::` in `code`, with the groups of `use crate::{a, b::c}`
/// opened: `["query::Session", "lake::TableRef", ...]`.
fn crate_paths(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = matching_brace(group);
            paths.extend(group_paths("", &group[..end]));
            rest = &group[end..];
        } else {
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            paths.push(rest[..end].trim_end_matches(':').to_string());
            rest = &rest[end..];
        }
    }
    paths
}

/// The index of the `}` that closes a group whose `{` was just consumed.
fn matching_brace(text: &str) -> usize {
    let mut depth = 0;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            _ => {}
        }
    }
    text.len()
}

/// The paths of a `use` group's inside (`a, b::{c, d}`), each prefixed with `prefix`.
fn group_paths(prefix: &str, inside: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    let mut items = Vec::new();
    for (i, c) in inside.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inside[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inside[start..]);
    for item in items.into_iter().map(str::trim).filter(|i| !i.is_empty()) {
        match item.split_once("::{") {
            Some((head, tail)) => {
                let tail = tail.strip_suffix('}').unwrap_or(tail);
                out.extend(group_paths(&format!("{prefix}{head}::"), tail));
            }
            None => out.push(format!("{prefix}{item}")),
        }
    }
    out
}

/// The layer of a top-level module, or None when `LAYERS` does not place it.
fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// Imports that run up or sideways: `(file, imported module)` for each import of a module
/// that is not in a lower layer than the file's own module.
fn back_edges(files: &[File]) -> Vec<String> {
    let mut found = BTreeSet::new();
    for file in files {
        let from = module_of(&file.path);
        if matches!(from, "lib" | "main") {
            continue;
        }
        let Some(own) = layer_of(from) else {
            found.insert(format!(
                "{}: module {from} has no layer in tests/it/layers.rs",
                file.path
            ));
            continue;
        };
        for path in crate_paths(&code(&file.text)) {
            let to = path.split("::").next().unwrap_or_default();
            if to == from || to.is_empty() || to.chars().next().is_some_and(char::is_uppercase) {
                continue; // its own module, or a re-export of the crate root (Error, Result...)
            }
            match layer_of(to) {
                Some(theirs) if theirs < own => {}
                _ => {
                    found.insert(format!("{} imports crate::{path}", file.path));
                }
            }
        }
    }
    found.into_iter().collect()
}

/// The module path of a file (`query/rules/mod.rs` → `query::rules`).
fn module_path(path: &str) -> String {
    let path = path.strip_suffix(".rs").unwrap_or(path);
    let path = path.strip_suffix("/mod").unwrap_or(path);
    path.replace('/', "::")
}

/// Pairs of files that import each other (a file and the `mod.rs` that declares it are not
/// counted: a parent names its children).
fn two_file_cycles(files: &[File]) -> Vec<String> {
    let modules: BTreeMap<String, &File> =
        files.iter().map(|f| (module_path(&f.path), f)).collect();
    let mut edges: BTreeSet<(String, String)> = BTreeSet::new();
    for file in files {
        let me = module_path(&file.path);
        let parent = me.rsplit_once("::").map_or("", |(p, _)| p).to_string();
        let code = code(&file.text);
        let mut named: Vec<String> = crate_paths(&code);
        // `super::x` from a file is `<parent>::x`.
        let mut rest = code.as_str();
        while let Some(at) = rest.find("super::") {
            rest = &rest[at + "super::".len()..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            if !parent.is_empty() && !file.path.ends_with("mod.rs") {
                named.push(format!("{parent}::{}", &rest[..end]));
            }
        }
        for path in named {
            // The longest prefix of the path that is a file's module.
            let parts: Vec<&str> = path.split("::").collect();
            let target = (1..=parts.len())
                .rev()
                .map(|n| parts[..n].join("::"))
                .find(|candidate| modules.contains_key(candidate));
            if let Some(target) = target
                && target != me
                && !me.starts_with(&format!("{target}::"))
                && !target.starts_with(&format!("{me}::"))
            {
                edges.insert((me.clone(), target));
            }
        }
    }
    edges
        .iter()
        .filter(|(a, b)| a < b && edges.contains(&(b.clone(), a.clone())))
        .map(|(a, b)| format!("{a} <-> {b}"))
        .collect()
}

#[test]
fn no_module_imports_from_its_own_layer_or_above() {
    let edges = back_edges(&source_files());
    assert!(
        edges.is_empty(),
        "imports that run up a layer (see docs/architecture.md, 'The rule'):\n{}",
        edges.join("\n")
    );
}

#[test]
fn no_two_files_import_each_other() {
    let cycles = two_file_cycles(&source_files());
    assert!(
        cycles.is_empty(),
        "files that import each other (move what both need into a third, lower file):\n{}",
        cycles.join("\n")
    );
}

#[test]
fn no_source_file_is_longer_than_600_lines() {
    let long: Vec<String> = source_files()
        .iter()
        .filter(|f| f.text.lines().count() > MAX_LINES)
        .map(|f| format!("{} ({} lines)", f.path, f.text.lines().count()))
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines (split them by responsibility):\n{}",
        long.join("\n")
    );
}

/// The checks find what they are for: a planted back-edge, a planted pair of files that import
/// each other, and a module with no layer.
#[test]
fn the_checks_catch_planted_mistakes() {
    let planted = vec![
        File {
            path: "lake/write.rs".into(),
            text: "use crate::{error::Result, cli::{Cli, run}};\n// crate::schedule in a comment\n"
                .into(),
        },
        File {
            path: "query/a.rs".into(),
            text: "use super::b::thing;\n".into(),
        },
        File {
            path: "query/b.rs".into(),
            text: "use crate::query::a::other;\n#[cfg(test)]\nmod tests { use crate::cli::X; }\n"
                .into(),
        },
        File {
            path: "newcomer.rs".into(),
            text: String::new(),
        },
    ];
    assert_eq!(
        back_edges(&planted),
        vec![
            "lake/write.rs imports crate::cli::Cli",
            "lake/write.rs imports crate::cli::run",
            "newcomer.rs: module newcomer has no layer in tests/it/layers.rs",
        ]
    );
    assert_eq!(two_file_cycles(&planted), vec!["query::a <-> query::b"]);
}
