//! Settings (in progress).
