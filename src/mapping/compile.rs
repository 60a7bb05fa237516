//! Compiling a mapping spec (STUB: owned by the mapping work).
use std::path::Path;

use super::{MappedUser, Record, Rejection};
use crate::diag::Diagnostics;

/// A compiled mapping, ready to apply to records.
#[derive(Debug)]
pub struct Mapping {}

impl Mapping {
    /// Parse and compile the mapping YAML `text` read from `file`. Collects every error.
    pub fn from_yaml(file: &Path, text: &str) -> Result<Mapping, Diagnostics> {
        let _ = (file, text);
        Err(Diagnostics::default())
    }

    /// Map one record.
    pub fn apply(&self, record: &Record) -> Result<MappedUser, Rejection> {
        Err(Rejection {
            origin: record.origin.clone(),
            external_id: None,
            field: None,
            reason: "stub".into(),
        })
    }
}
