//! Raw serde structs of the mapping YAML (STUB: owned by the mapping work).
