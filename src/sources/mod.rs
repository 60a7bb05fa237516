//! Sources: where records come from.
//!
//! A [`Source`] yields a stream of records. A record that cannot be read becomes a
//! [`Rejection`] in the stream (the run goes on); a failure that makes the pull incomplete
//! (the file vanished, the server went away, a page was not JSON) is a [`SourceError`] and
//! ends the stream. A stream that ends without an error is a *complete* pull; any other
//! ending is incomplete, and an incomplete pull must never be read as "these users
//! disappeared": the run sends nothing.
//!
//! Streams are pulled lazily and every source reads ahead by a bounded amount (a channel of
//! rows, one page, one scan segment page), so a slow consumer holds the source back and no
//! source ever holds the whole data set.
//!
//! The configuration is a closed, `type`-tagged enum: each variant owns its settings and
//! builds its source. An unknown `type` is rejected with the list of valid ones.

pub mod csv;
pub mod dynamodb;
pub mod http;

use std::path::Path;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde::Deserialize;

use crate::mapping::{Record, Rejection};

/// One item of a pull: a record, or a record that could not be read.
pub type SourceItem = Result<Record, Rejection>;

/// A failure that stops a pull (the pull is then incomplete), or a failed `check`.
///
/// Messages never contain secrets: HTTP errors name the URL without its query string, and
/// credentials are only ever named by where they were looked for.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot open {path}: {source}")]
    Open { path: String, source: std::io::Error },
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("dynamodb table {table}: {message}")]
    DynamoDb { table: String, message: String },
    #[error("http source {url}: {message}")]
    Http { url: String, message: String },
    #[error("{0}")]
    Config(String),
}

/// A pluggable source of records.
pub trait Source: Send + Sync {
    /// Stream every record. Errors end the stream and mean the pull was incomplete.
    fn pull(&self) -> BoxStream<'static, Result<SourceItem, SourceError>>;

    /// Check that the source can be reached and read (credentials, table, file, URL),
    /// reading as little as possible. `Ok` carries a one-line description for humans.
    fn check(&self) -> BoxFuture<'_, Result<String, SourceError>>;
}

/// The `source:` block of a job, tagged by `type`.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// A CSV file (or `-` for stdin), optionally gzip-compressed.
    Csv(csv::CsvSourceConfig),
    /// An Amazon DynamoDB table or index, read with Scan or Query.
    Dynamodb(dynamodb::DynamoDbSourceConfig),
    /// An HTTP JSON API, paginated.
    Http(http::HttpSourceConfig),
}

impl SourceConfig {
    /// The valid `type` values, for error messages.
    pub const TYPES: &'static [&'static str] = &["csv", "dynamodb", "http"];

    /// Build the source. Relative paths are resolved against `base_dir` (the config file's
    /// directory). Nothing is opened or contacted until the source is pulled or checked.
    pub fn build(&self, base_dir: &Path) -> Box<dyn Source> {
        match self {
            SourceConfig::Csv(c) => Box::new(csv::CsvSource::new(c, base_dir)),
            SourceConfig::Dynamodb(c) => Box::new(dynamodb::DynamoDbSource::new(c)),
            SourceConfig::Http(c) => Box::new(http::HttpSource::new(c, base_dir)),
        }
    }

    /// Pure checks serde cannot express; each problem is `(key under source, message)`.
    pub fn validate(&self) -> Vec<(String, String)> {
        match self {
            SourceConfig::Csv(c) => c.validate(),
            SourceConfig::Dynamodb(c) => c.validate(),
            SourceConfig::Http(c) => c.validate(),
        }
    }
}
