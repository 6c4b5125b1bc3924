#!/usr/bin/env bash
# Starts the whole system with demo data: services (installed if missing) including the mock
# payment provider on its own port, database, migrations, demo seed, then the server in the
# foreground (Ctrl-C stops it; `dev/services.sh down` stops the provider and the broker).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
dev/services.sh toolchain
cargo build --release --bin boxoffice
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/boxoffice"
BOXOFFICE_BIN="$BIN" dev/services.sh up
if ! psql -h 127.0.0.1 -U postgres -d postgres -Atqc "SELECT 1 FROM pg_database WHERE datname = 'boxoffice'" | grep -q 1; then
    psql -h 127.0.0.1 -U postgres -d postgres -qc 'CREATE DATABASE boxoffice'
fi
"$BIN" migrate
"$BIN" seed-demo
cat <<'TXT'

  boxoffice demo
  --------------
  Open these two in a browser (sign in with the accounts below):
  Buyer page   http://127.0.0.1:8000/
  Operations   http://127.0.0.1:8000/admin

  API          http://127.0.0.1:8000/api/v1
  OpenAPI      http://127.0.0.1:8000/api-docs/openapi.json
  Readiness    http://127.0.0.1:8000/readyz
  Metrics      http://127.0.0.1:8000/metrics
  Payments     the mock provider's checkout opens at http://127.0.0.1:8001/mockpay/checkout/…
               (its own process: boxoffice mockpay, log in .data/mockpay.log)
  Demo buyer   demo@boxoffice.local / demo-password
  Demo admin   admin@boxoffice.local / admin-password

TXT
exec "$BIN" serve
