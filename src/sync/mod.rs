//! One run of a job (in progress).
