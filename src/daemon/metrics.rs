//! Prometheus metrics. (Skeleton: the metrics helper fills this in.)
