//! Diagnostics for files that ops edit (settings and mappings).
//!
//! serde and the `config` crate lose track of where a key was written. To report every error
//! with its file, line and key path, we parse the YAML text a second time with `saphyr-parser`
//! and keep an index from key path (`jobs[0].source.path`) to the line and column where the key
//! (or sequence item) starts. Errors found anywhere later (unknown keys, bad values, failed
//! compilation) look their key path up in that index.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use saphyr_parser::{Event, Parser};
use serde::Serialize;

/// One problem in a file that ops edit, with enough context to fix it without guessing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line, when the key could be located.
    pub line: Option<usize>,
    /// 1-based column, when the key could be located.
    pub column: Option<usize>,
    /// Key path such as `jobs[0].source.path`; empty for whole-file problems.
    pub key: String,
    /// What is wrong, lowercase, no trailing period.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl Diagnostic {
    /// The diagnostic, then the line of `text` it points at with a caret under the column,
    /// like rustc does:
    ///
    /// ```text
    /// maps/hr.yaml:7:3: attributes.first-name: attribute name ...
    ///   |
    /// 7 |   first-name: first_name
    ///   |   ^
    /// ```
    ///
    /// `text` is the file's contents; without it, or without a line, only the first line.
    pub fn render(&self, text: Option<&str>) -> String {
        let mut out = self.to_string();
        let (Some(text), Some(line)) = (text, self.line) else { return out };
        let Some(src) = text.lines().nth(line.saturating_sub(1)) else { return out };
        let num = line.to_string();
        let pad = " ".repeat(num.len());
        let col = self.column.unwrap_or(1).max(1);
        // Tabs keep their width so the caret lines up under them.
        let lead: String =
            src.chars().take(col - 1).map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
        out.push_str(&format!("\n{pad} |\n{num} | {src}\n{pad} | {lead}^"));
        out
    }
}

/// A list of diagnostics, displayed one per line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl Diagnostics {
    /// Every diagnostic with the source line it points at (each file is read again for this;
    /// one that cannot be read is rendered without its line).
    pub fn render_with_sources(&self) -> String {
        let mut texts: HashMap<PathBuf, Option<String>> = HashMap::new();
        let mut out = Vec::with_capacity(self.0.len());
        for d in &self.0 {
            let text = texts
                .entry(d.file.clone())
                .or_insert_with(|| std::fs::read_to_string(&d.file).ok());
            out.push(d.render(text.as_deref()));
        }
        out.join("\n")
    }
}

/// Where each key path of a YAML document starts.
#[derive(Debug, Clone, Default)]
pub struct YamlIndex {
    file: PathBuf,
    positions: HashMap<String, (usize, usize)>,
}

enum Frame {
    /// Inside a mapping: `Some(key)` once the key scalar was read and its value is awaited.
    Map { path: String, key: Option<String> },
    /// Inside a sequence: the index of the next item.
    Seq { path: String, next: usize },
}

impl YamlIndex {
    /// Index `text` (the contents of `file`). Syntax errors leave the index partial: the
    /// deserializer reports them with their own position.
    pub fn new(file: impl AsRef<Path>, text: &str) -> Self {
        let mut positions = HashMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        for item in Parser::new_from_str(text) {
            let Ok((event, span)) = item else { break };
            let pos = (span.start.line(), span.start.col() + 1);
            // The path of the node this event starts, if it is a value (not a mapping key).
            let mut value_path = |stack: &mut Vec<Frame>| -> Option<String> {
                match stack.last_mut() {
                    None => Some(String::new()),
                    Some(Frame::Map { key, path }) => {
                        key.take().map(|k| if path.is_empty() { k } else { format!("{path}.{k}") })
                    }
                    Some(Frame::Seq { path, next }) => {
                        let p = format!("{path}[{next}]");
                        *next += 1;
                        positions.entry(p.clone()).or_insert(pos);
                        Some(p)
                    }
                }
            };
            match event {
                Event::Scalar(value, ..) => {
                    if let Some(Frame::Map { path, key }) = stack.last_mut()
                        && key.is_none()
                    {
                        let full = if path.is_empty() {
                            value.to_string()
                        } else {
                            format!("{path}.{value}")
                        };
                        positions.entry(full).or_insert(pos);
                        *key = Some(value.to_string());
                    } else {
                        let _ = value_path(&mut stack);
                    }
                }
                Event::Alias(_) => {
                    let _ = value_path(&mut stack);
                }
                Event::MappingStart(..) => {
                    let path = value_path(&mut stack).unwrap_or_default();
                    stack.push(Frame::Map { path, key: None });
                }
                Event::SequenceStart(..) => {
                    let path = value_path(&mut stack).unwrap_or_default();
                    stack.push(Frame::Seq { path, next: 0 });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                _ => {}
            }
        }
        Self { file: file.as_ref().to_path_buf(), positions }
    }

    /// The file this index describes.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Line and column of `key`, or of its nearest indexed ancestor.
    pub fn locate(&self, key: &str) -> Option<(usize, usize)> {
        let mut k = key;
        loop {
            if let Some(p) = self.positions.get(k) {
                return Some(*p);
            }
            let cut = k.rfind(['.', '['])?;
            k = &k[..cut];
        }
    }

    /// A diagnostic for `key` in this file.
    pub fn diag(&self, key: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        let key = key.into();
        let (line, column) = match self.locate(&key) {
            Some((l, c)) => (Some(l), Some(c)),
            None => (None, None),
        };
        Diagnostic { file: self.file.clone(), line, column, key, message: message.into() }
    }
}

/// The closest of `candidates` to `unknown`, if it is close enough to be a likely typo.
pub fn suggest<'a>(unknown: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(unknown, c), *c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// The one rule for plain-http URLs in anything ops configure (Okta's org URL, an HTTP source):
/// whether `url` is plain http to a loopback address (allowed, with a warning).
pub fn is_loopback_http(url: &url::Url) -> bool {
    url.scheme() == "http"
        && match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => std::net::IpAddr::V4(ip).is_loopback(),
            Some(url::Host::Ipv6(ip)) => std::net::IpAddr::V6(ip).is_loopback(),
            None => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_nested_keys_and_sequence_items() {
        let text = "okta:\n  org_url: https://x\njobs:\n  - name: a\n    source:\n      type: csv\n      path: p.csv\n  - name: b\n";
        let idx = YamlIndex::new("c.yaml", text);
        assert_eq!(idx.locate("okta.org_url"), Some((2, 3)));
        assert_eq!(idx.locate("jobs[0].source.path"), Some((7, 7)));
        assert_eq!(idx.locate("jobs[1].name"), Some((8, 5)));
        // Unknown leaf falls back to its parent.
        assert_eq!(idx.locate("jobs[1].nope"), Some((8, 5)));
        let d = idx.diag("jobs[0].source.path", "no such file");
        assert_eq!(d.to_string(), "c.yaml:7:7: jobs[0].source.path: no such file");
    }

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            suggest("identity_sorce_id", &["name", "identity_source_id"]),
            Some("identity_source_id")
        );
        assert_eq!(suggest("zzz", &["name", "identity_source_id"]), None);
    }
}
