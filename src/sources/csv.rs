//! CSV source (STUB: owned by the sources work).
use std::path::{Path, PathBuf};

use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use super::{Source, SourceError, SourceItem};

/// `type: csv`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CsvSourceConfig {
    /// Path to the CSV file; relative paths are resolved against the config file's directory.
    pub path: PathBuf,
}

pub struct CsvSource {
    path: PathBuf,
}

impl CsvSource {
    pub fn new(config: &CsvSourceConfig, base_dir: &Path) -> Self {
        Self { path: base_dir.join(&config.path) }
    }
}

impl Source for CsvSource {
    fn pull(&self) -> BoxStream<'static, Result<SourceItem, SourceError>> {
        let _ = &self.path;
        Box::pin(futures::stream::empty())
    }
}
