//! Sources: where records come from.
//!
//! A [`Source`] yields a stream of records. A record that cannot be read becomes a
//! [`Rejection`] in the stream (the run goes on); a failure that makes the pull incomplete
//! (the file vanished, the server went away) is a [`SourceError`] and ends the stream. An
//! incomplete pull must never be read as "these users disappeared".
//!
//! The configuration is a closed, `type`-tagged enum: each variant owns its settings and
//! builds its source.

pub mod csv;

use std::path::Path;

use futures::stream::BoxStream;
use serde::Deserialize;

use crate::mapping::{Record, Rejection};

/// One item of a pull: a record, or a record that could not be read.
pub type SourceItem = Result<Record, Rejection>;

/// A failure that stops a pull; the pull is then incomplete.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot open {path}: {source}")]
    Open { path: String, source: std::io::Error },
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
}

/// A pluggable source of records.
pub trait Source: Send + Sync {
    /// Stream every record. Errors end the stream and mean the pull was incomplete.
    fn pull(&self) -> BoxStream<'static, Result<SourceItem, SourceError>>;
}

/// The `source:` block of a job, tagged by `type`.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// A CSV file with a header row.
    Csv(csv::CsvSourceConfig),
}

impl SourceConfig {
    /// The valid `type` values, for error messages.
    pub const TYPES: &'static [&'static str] = &["csv"];

    /// Build the source. Relative paths are resolved against `base_dir` (the config file's
    /// directory).
    pub fn build(&self, base_dir: &Path) -> Box<dyn Source> {
        match self {
            SourceConfig::Csv(c) => Box::new(csv::CsvSource::new(c, base_dir)),
        }
    }
}
