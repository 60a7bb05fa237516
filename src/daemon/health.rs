//! `/healthz` and `/readyz`. (Skeleton: the metrics helper fills this in.)
