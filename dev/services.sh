#!/usr/bin/env bash
# Makes this Debian machine ready for boxoffice and manages the dev services.
#
#   dev/services.sh up      install what is missing, start PostgreSQL, Redis, pulsar-lite + bridge and
#                           the mock payment provider (`boxoffice mockpay`, its own process and port)
#   dev/services.sh down    stop pulsar-lite, the bridge and the provider (PostgreSQL and Redis are left running)
#   dev/services.sh status  say what answers
#   dev/services.sh install install what is missing, start nothing (dev/faults.sh: its stores are its own)
#   dev/services.sh toolchain  only what building boxoffice needs (dev/demo.sh builds before `up`)
#
# The provider runs BOXOFFICE_BIN when set (dev/demo.sh passes its release build), else a debug
# build of this checkout, with this checkout's config.toml.
#
# Idempotent. Reuses PostgreSQL on 5432 and Redis on 6379 when they already answer. Everything
# comes from Debian packages, PyPI (pulsar-lite, schemathesis), npm or crates.io. State lives
# under .data/ (git-ignored).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="$ROOT/.data"
PULSAR_LITE_VERSION="0.2.0"
SCHEMATHESIS_VERSION="4.32.5"       # the API fuzz test (tests/api/fuzz.rs)
PULSAR_LITE_ADDR="127.0.0.1:6651"   # the broker itself; only the bridge talks to it
BRIDGE_ADDR="127.0.0.1:6650"        # what boxoffice and tests use: pulsar://127.0.0.1:6650
# The mock payment provider: payments.mockpay.port (config.toml; the environment overrides it).
MOCKPAY_ADDR="127.0.0.1:${BOXOFFICE__PAYMENTS__MOCKPAY__PORT:-8001}"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

say() { printf '==> %s\n' "$*"; }
port_open() { (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; }

wait_port() {
    for _ in $(seq 1 100); do port_open "$1" && return 0; sleep 0.1; done
    echo "nothing listens on $1 after 10 s ($2); see its log under .data/" >&2
    return 1
}

apt_install() {
    local missing=()
    for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
}

ensure_toolchain() {
    # protoc: the pulsar crate's build script needs it; libssl-dev: its TLS; python3-pip: pulsar-lite;
    # python3-venv: schemathesis's own environment.
    apt_install protobuf-compiler libssl-dev pkg-config gcc python3-pip python3-venv curl ca-certificates
    if ! command -v cargo >/dev/null; then
        echo "Rust (cargo) is required: install it with rustup (https://rustup.rs), then rerun." >&2
        exit 1
    fi
}

ensure_postgres() {
    if port_open 127.0.0.1:5432; then say "PostgreSQL answers on 5432 (reused)"; else
        apt_install postgresql
        local version; version="$(ls /etc/postgresql | sort -V | tail -n1)"
        # Dev machine only: trust local TCP connections so the default URL needs no password.
        local hba="/etc/postgresql/$version/main/pg_hba.conf"
        if ! $SUDO grep -q "boxoffice-dev" "$hba"; then
            $SUDO sed -i '1i host all all 127.0.0.1/32 trust # boxoffice-dev\nhost all all ::1/128 trust # boxoffice-dev' "$hba"
        fi
        say "starting PostgreSQL $version"
        $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || $SUDO pg_ctlcluster "$version" main start
        wait_port 127.0.0.1:5432 postgresql
    fi
    if ! psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'SELECT 1' >/dev/null 2>&1; then
        echo "PostgreSQL on 5432 refuses user postgres without a password; allow trust for 127.0.0.1" \
             "or set BOXOFFICE__DATABASE__URL and BOXOFFICE_TEST_PG." >&2
        exit 1
    fi
}

ensure_redis() {
    if port_open 127.0.0.1:6379; then say "Redis answers on 6379 (reused)"; return; fi
    apt_install redis-server
    say "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
        --logfile "$DATA/redis.log" --dir "$DATA"
    wait_port 127.0.0.1:6379 redis
}

pulsar_lite_bin() { echo "$DATA/bin/pulsar-lite"; }

ensure_pulsar_lite_installed() {
    [ -x "$(pulsar_lite_bin)" ] && return 0
    say "installing pulsar-lite $PULSAR_LITE_VERSION from PyPI"
    local tmp; tmp="$(mktemp -d)"
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "pulsar-lite==$PULSAR_LITE_VERSION"
    python3 -m zipfile -e "$tmp"/pulsar_lite-*.whl "$tmp/x"
    mkdir -p "$DATA/bin"
    install -m 0755 "$(find "$tmp/x" -path '*pulsar_lite/bin/pulsar-lite' | head -n1)" "$(pulsar_lite_bin)"
    rm -rf "$tmp"
}

schemathesis_bin() { echo "$DATA/schemathesis/bin/schemathesis"; }

ensure_schemathesis() {
    # A virtual environment of its own under .data: the fuzz test runs it by path, and nothing is
    # installed into the machine's Python.
    local bin; bin="$(schemathesis_bin)"
    if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then return 0; fi
    say "installing schemathesis $SCHEMATHESIS_VERSION from PyPI"
    rm -rf "$DATA/schemathesis"
    python3 -m venv "$DATA/schemathesis"
    "$DATA/schemathesis/bin/python" -m pip install --quiet --disable-pip-version-check \
        "schemathesis==$SCHEMATHESIS_VERSION"
}

start_daemon() { # name, log, command...
    local name="$1" log="$2"; shift 2
    local pidfile="$DATA/$name.pid"
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then return 0; fi
    nohup "$@" >"$log" 2>&1 </dev/null &
    echo $! >"$pidfile"
}

ensure_pulsar() {
    ensure_pulsar_lite_installed
    mkdir -p "$DATA/pulsar-lite"
    # Metrics off: pulsar-lite would otherwise take 0.0.0.0:8080.
    printf '[metrics]\nenabled = false\n' >"$DATA/pulsar-lite/pulsar-lite.toml"
    if port_open "$PULSAR_LITE_ADDR"; then say "pulsar-lite answers on $PULSAR_LITE_ADDR"; else
        say "starting pulsar-lite on $PULSAR_LITE_ADDR"
        start_daemon pulsar-lite "$DATA/pulsar-lite/broker.log" "$(pulsar_lite_bin)" \
            --config "$DATA/pulsar-lite/pulsar-lite.toml" --addr "$PULSAR_LITE_ADDR" --db-path "$DATA/pulsar-lite/db"
        wait_port "$PULSAR_LITE_ADDR" pulsar-lite
    fi
    if port_open "$BRIDGE_ADDR"; then say "pulsar bridge answers on $BRIDGE_ADDR"; return; fi
    say "building and starting the pulsar bridge on $BRIDGE_ADDR"
    (cd "$ROOT" && cargo build --quiet -p pulsar-bridge)
    start_daemon pulsar-bridge "$DATA/pulsar-bridge.log" "$ROOT/target/debug/pulsar-bridge" \
        --listen "$BRIDGE_ADDR" --upstream "$PULSAR_LITE_ADDR"
    wait_port "$BRIDGE_ADDR" pulsar-bridge
}

boxoffice_bin() {
    if [ -n "${BOXOFFICE_BIN:-}" ]; then echo "$BOXOFFICE_BIN"; return; fi
    (cd "$ROOT" && cargo build --quiet --bin boxoffice)
    echo "${CARGO_TARGET_DIR:-$ROOT/target}/debug/boxoffice"
}

ensure_mockpay() {
    # A third party of its own: never served by the boxoffice server itself. Its callbacks go to
    # the notify URL of its configuration (the server's public_url by default).
    if port_open "$MOCKPAY_ADDR"; then say "mockpay answers on $MOCKPAY_ADDR (reused)"; return; fi
    local bin; bin="$(boxoffice_bin)"
    say "starting the mock payment provider on $MOCKPAY_ADDR"
    start_daemon mockpay "$DATA/mockpay.log" "$bin" --config "$ROOT/config.toml" mockpay
    wait_port "$MOCKPAY_ADDR" mockpay
}

stop_daemon() {
    local pidfile="$DATA/$1.pid"
    if [ -f "$pidfile" ]; then
        kill "$(cat "$pidfile")" 2>/dev/null && say "stopped $1" || true
        rm -f "$pidfile"
    fi
}

status() {
    for pair in "postgresql 127.0.0.1:5432" "redis 127.0.0.1:6379" "pulsar-lite $PULSAR_LITE_ADDR" "pulsar-bridge $BRIDGE_ADDR" "mockpay $MOCKPAY_ADDR"; do
        set -- $pair
        if port_open "$2"; then echo "$1: up ($2)"; else echo "$1: down ($2)"; fi
    done
}

ensure_browser() {
    # The web pages' browser tests: Debian's chromium (never a downloaded browser), Node.js and
    # playwright-core from npm, pinned by web/tests/package-lock.json.
    apt_install chromium
    command -v npm >/dev/null || apt_install nodejs npm
    local lock="$ROOT/web/tests/package-lock.json" stamp="$ROOT/web/tests/node_modules/.installed"
    if [ ! -f "$stamp" ] || [ "$lock" -nt "$stamp" ]; then
        say "installing the browser tests' npm packages"
        (cd "$ROOT/web/tests" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
        touch "$stamp"
    fi
}

case "${1:-up}" in
    up)
        mkdir -p "$DATA"
        ensure_toolchain
        ensure_postgres
        ensure_redis
        ensure_pulsar
        ensure_mockpay
        ensure_browser
        ensure_schemathesis
        export PULSAR_LITE_BIN="$(pulsar_lite_bin)"
        say "services ready"
        ;;
    down) stop_daemon mockpay; stop_daemon pulsar-bridge; stop_daemon pulsar-lite ;;
    status) status ;;
    install)
        mkdir -p "$DATA"
        ensure_toolchain
        apt_install postgresql redis-server
        ensure_pulsar_lite_installed
        ;;
    toolchain) ensure_toolchain ;;
    *) echo "usage: $0 [up|down|status|install|toolchain]" >&2; exit 2 ;;
esac
