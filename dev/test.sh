#!/usr/bin/env bash
# Runs every test of the workspace against real services (started first if needed).
#   dev/test.sh            all tests
#   dev/test.sh -- args    extra arguments for `cargo test` (e.g. a test name filter)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
dev/services.sh up
export PULSAR_LITE_BIN="$ROOT/.data/bin/pulsar-lite"
export SCHEMATHESIS_BIN="$ROOT/.data/schemathesis/bin/schemathesis"
[ "${1:-}" = "--" ] && shift
cargo test --workspace "$@"
