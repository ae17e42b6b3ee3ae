//! The house rules of `src/`, checked on every test run so they stay true:
//! - imports point down the layer chain written in ARCHITECTURE.md, never up or sideways;
//! - no source file grows past the size a reader can hold in their head.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Layer of each top-level module, lowest first. A module may import its own layer's
/// `crate::` siblings only where `SIDEWAYS` allows it, and any module of a lower layer.
const LAYERS: &[(&str, u8)] = &[
    // util imports nothing of the crate: the error type may use it (the full-disk probe).
    ("util", 0),
    ("id", 1),
    ("error", 1),
    ("span", 1),
    ("format", 2),
    ("store", 3),
    ("repo", 4),
    ("source", 4),
    ("ops", 5),
    ("lifecycle", 6),
    ("cli", 7),
];

/// Test support: the fuzz bodies reach the pure codecs and nothing that does I/O.
const FUZZING_MAY_USE: &[&str] = &["id", "error", "util", "format"];

/// The largest a file in `src/` may be, in lines.
const MAX_LINES: usize = 650;

fn rank(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level modules a file names through `crate::`, including inside `use crate::{a, b::c}`.
fn crate_refs(text: &str) -> Vec<String> {
    let code: String = text
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        // `$crate::`, `some_crate::` are not ours.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut item = String::new();
            let mut items = Vec::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => items.push(std::mem::take(&mut item)),
                    _ if depth == 1 => item.push(c),
                    _ => {}
                }
            }
            items.push(item);
            for it in items {
                let name: String = it.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

fn src_files() -> (PathBuf, Vec<PathBuf>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    (src, files)
}

#[test]
fn imports_point_down_the_layers() {
    let (src, files) = src_files();
    let mut violations = Vec::new();
    let mut seen = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(&src).expect("under src");
        let top = rel.components().next().expect("non-empty").as_os_str().to_string_lossy();
        let top = top.trim_end_matches(".rs").to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        let text = std::fs::read_to_string(f).expect("read source");
        for m in crate_refs(&text) {
            *seen.entry(top.clone()).or_insert(0usize) += 1;
            if m == top || m == "Error" || m == "Result" {
                continue;
            }
            let ok = if top == "fuzzing" {
                FUZZING_MAY_USE.contains(&m.as_str())
            } else {
                match (rank(&top), rank(&m)) {
                    (Some(a), Some(b)) => b < a,
                    (None, _) => {
                        violations.push(format!("{}: module `{top}` has no layer in LAYERS", rel.display()));
                        continue;
                    }
                    (_, None) => false,
                }
            };
            if !ok {
                violations.push(format!("{}: `{top}` imports `crate::{m}`", rel.display()));
            }
        }
    }
    violations.sort();
    violations.dedup();
    assert!(violations.is_empty(), "imports against the layer rule (ARCHITECTURE.md):\n{}", violations.join("\n"));
    // The check must have seen the layers it guards, or it guards nothing.
    for layer in ["format", "store", "repo", "ops", "lifecycle", "cli"] {
        assert!(seen.get(layer).copied().unwrap_or(0) > 0, "no crate:: imports seen in {layer}/");
    }
}

#[test]
fn the_layer_check_catches_an_upward_import() {
    let refs = crate_refs("use crate::{ops::restore, format::pack::{self, Entry}};\nlet x = crate::lifecycle::now(); // crate::cli\n$crate::id");
    assert_eq!(refs, vec!["ops", "format", "lifecycle"]);
}

#[test]
fn no_source_file_is_too_long() {
    let (src, files) = src_files();
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).expect("read source").lines().count();
            (n > MAX_LINES).then(|| format!("{}: {n} lines", f.strip_prefix(&src).expect("under src").display()))
        })
        .collect();
    assert!(long.is_empty(), "files over {MAX_LINES} lines (split them by concern):\n{}", long.join("\n"));
}
