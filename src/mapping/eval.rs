//! Applying a compiled mapping to one record (STUB: owned by the mapping work).
