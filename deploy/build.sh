#!/usr/bin/env sh
# The release build of the xaas binary: the one command both the container image
# (deploy/Dockerfile) and CI run, so the image ships exactly what CI built and tested.
# `--locked`: build with Cargo.lock as committed, never a silently updated dependency.
set -eu
cd "$(dirname "$0")/.."
exec cargo build --release --locked --bin xaas
