#!/usr/bin/env bash
# The fault suite (README "Fault suite"): release build, then `boxoffice chaos`, which starts a
# Postgres cluster, a Redis and a pulsar-lite broker of its own (never the shared services), a
# server process and a crowd of buyers, injects the faults and checks the invariants after each.
#
#   dev/faults.sh            full form: 10 × kill -9 under 200 buyers, Redis and Postgres down
#                            20 s each, the broker 30 s; the table goes to bench-results/faults.md
#   dev/faults.sh --short    the short form the test command runs (3 kills, 5 s outages, 30 buyers)
#   dev/faults.sh ARGS       any `boxoffice chaos` option, e.g. --clients 50 --kills 2 --keep
#
# Exits non-zero when a check fails; the working directory (data and every process's log) is
# then kept and its path printed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
dev/services.sh install         # postgresql and redis-server packages, pulsar-lite, protoc
export PULSAR_LITE_BIN="$ROOT/.data/bin/pulsar-lite"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
cargo build --release --quiet -p boxoffice -p pulsar-bridge
out=()
[ $# -eq 0 ] && out=(--out bench-results/faults.md)
# The bridge is found next to the binary (target/release/pulsar-bridge).
RUST_LOG="${RUST_LOG:-warn}" exec "$TARGET/release/boxoffice" chaos "${out[@]}" "$@"
