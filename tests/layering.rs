//! The layers of `src/` (ARCHITECTURE.md): a module imports only modules of a lower layer, so
//! no import cycle can form between the top-level modules and the layering cannot quietly
//! regrow. Also: no source file over 1,000 lines.
//!
//! The check reads the source text: every `crate::name` path (in `use` items, braces
//! included, and in expressions) and every `super::` chain that climbs to the crate root.
//! Comments are skipped, so a doc link to a higher module is fine.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Lowest first. A module may import the modules of the layers below its own, never one of
/// its own layer or above.
const LAYERS: &[&[&str]] = &[
    // What every layer needs: diagnostics with file and line, metric names and helpers.
    &["diag", "telemetry", "compute"],
    // Record → profile, pure.
    &["mapping"],
    // The Okta client and session lifecycle; it knows mapped users, nothing else.
    &["okta"],
    // Where records come from, where confirmations go, and the emulator of Okta.
    &["sources", "state", "sim"],
    // The config file, resolved into each component's settings.
    &["settings"],
    // One run, and the one send stage.
    &["sync"],
    // `xaas serve`.
    &["daemon"],
    &["demo"],
    &["cli"],
];

/// The crate's entry points, above every layer.
const ROOTS: &[&str] = &["lib", "main"];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Source text without `//` comments (line and doc comments) and `/* */` blocks. A `//` inside
/// a string literal cuts the rest of that line, which can only hide an import, never invent one.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        match (rest.find("//"), rest.find("/*")) {
            (Some(l), b) if b.is_none_or(|b| l < b) => {
                out.push_str(&rest[..l]);
                rest = rest[l..].find('\n').map_or("", |n| &rest[l + n..]);
            }
            (_, Some(b)) => {
                out.push_str(&rest[..b]);
                rest = rest[b..].find("*/").map_or("", |e| &rest[b + e + 2..]);
            }
            _ => {
                out.push_str(rest);
                rest = "";
            }
        }
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// The top-level idents of a brace group `{a, b::c, d::{e, f}}` starting at `s` (after `{`).
fn brace_idents(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut expect_ident = true;
    let mut i = 0;
    let bytes = s.as_bytes();
    while i < bytes.len() {
        let c = bytes[i] as char;
        match c {
            '{' => {
                depth += 1;
                expect_ident = false;
            }
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => expect_ident = true,
            c if expect_ident && depth == 0 && (c.is_ascii_alphabetic() || c == '_') => {
                out.push(ident_at(&s[i..]));
                expect_ident = false;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// The top-level modules of the crate that `text` refers to, given the module path of the file
/// (`["sync", "stage"]` for `src/sync/stage.rs`, `["sync"]` for `src/sync/mod.rs`).
fn referenced_modules(text: &str, module_path: &[String]) -> BTreeSet<String> {
    let text = strip_comments(text);
    let mut out = BTreeSet::new();
    let mut add_after_root = |after: &str| {
        if let Some(group) = after.strip_prefix('{') {
            out.extend(brace_idents(group).into_iter().map(str::to_string));
        } else {
            let id = ident_at(after);
            if !id.is_empty() {
                out.insert(id.to_string());
            }
        }
    };
    for (at, _) in text.match_indices("crate::") {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        add_after_root(&text[at + "crate::".len()..]);
    }
    // `super::super::x` climbing out of the file's top-level module names `x` at the root.
    for (at, _) in text.match_indices("super::") {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let mut rest = &text[at..];
        let mut depth = module_path.len();
        while let Some(r) = rest.strip_prefix("super::") {
            rest = r;
            depth = depth.saturating_sub(1);
        }
        if depth == 0 {
            add_after_root(rest);
        }
    }
    out
}

/// One upward (or sideways) import: `from` imports `to`.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Violation {
    file: PathBuf,
    from: String,
    to: String,
}

fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> =
        rel.iter().map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

fn check_file(file: &Path, path: &[String], text: &str) -> Vec<Violation> {
    let from = &path[0];
    if ROOTS.contains(&from.as_str()) {
        return Vec::new();
    }
    let Some(own) = layer_of(from) else {
        return vec![Violation { file: file.into(), from: from.clone(), to: "(no layer)".into() }];
    };
    referenced_modules(text, path)
        .into_iter()
        .filter(|to| to != from)
        .filter(|to| layer_of(to).is_some_and(|l| l >= own))
        .map(|to| Violation { file: file.into(), from: from.clone(), to })
        .collect()
}

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

fn src_files() -> (PathBuf, Vec<PathBuf>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    (src, files)
}

#[test]
fn no_module_imports_one_of_its_own_layer_or_above() {
    let (src, files) = src_files();
    let mut violations = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        violations.extend(check_file(file, &module_path(&src, file), &text));
    }
    violations.sort();
    let listed: Vec<String> = violations
        .iter()
        .map(|v| format!("{}: `{}` imports `{}`", v.file.display(), v.from, v.to))
        .collect();
    assert!(
        listed.is_empty(),
        "imports against the layers (lowest first: {LAYERS:?}):\n{}",
        listed.join("\n")
    );
}

#[test]
fn every_top_level_module_has_a_layer() {
    let (src, files) = src_files();
    let tops: BTreeSet<String> = files.iter().map(|f| module_path(&src, f)[0].clone()).collect();
    for top in tops {
        assert!(
            ROOTS.contains(&top.as_str()) || layer_of(&top).is_some(),
            "src/{top} is in no layer: add it to LAYERS in tests/layering.rs"
        );
    }
}

#[test]
fn no_source_file_is_over_a_thousand_lines() {
    let (_, files) = src_files();
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (n > 1_000).then(|| format!("{}: {n} lines", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these along the data flow:\n{}", long.join("\n"));
}

#[test]
fn the_check_catches_an_upward_import_in_each_form() {
    let okta = vec!["okta".to_string(), "client".to_string()];
    let file = Path::new("src/okta/client.rs");
    for text in [
        "use crate::daemon::metrics;",
        "use crate::{mapping::MappedUser, sync::report::JobReport};",
        "fn f() { crate::cli::EXIT_OK; }",
        "use super::super::state::StateStore;",
        "use crate::{\n    telemetry,\n    settings::{Job, Settings},\n};",
    ] {
        let v = check_file(file, &okta, text);
        assert_eq!(v.len(), 1, "{text}: {v:?}");
    }
    // Downward imports, comments, doc links and the module's own paths are fine.
    for text in [
        "use crate::mapping::MappedUser;\nuse crate::{diag, telemetry::endpoint};",
        "//! see [`crate::daemon::lease`]\n/* crate::cli */ use super::batch::Limits;",
        "use crate::okta::model::SessionStatus;",
    ] {
        assert!(check_file(file, &okta, text).is_empty(), "{text}");
    }
    // A peer of the same layer is refused too: peers never import each other.
    let state = ["state".to_string()];
    assert_eq!(check_file(file, &state, "use crate::sources::Source;").len(), 1);
}
