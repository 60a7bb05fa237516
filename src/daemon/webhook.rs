//! The webhook. (Skeleton: the webhook helper fills this in.)
