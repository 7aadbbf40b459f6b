#!/usr/bin/env bash
# Fails when a locked dependency declares a `rust-version` newer than the workspace's, which
# would make the `rust-version` we publish a lie. It reads `cargo metadata` (every locked
# package of every feature and platform, with its declared `rust_version`): no build, and the
# lock file stays as it is (`--locked`).
set -euo pipefail
cd "$(dirname "$0")/.."

# Through a pipe: the whole graph is too long for one command-line argument.
cargo metadata --format-version 1 --all-features --locked | python3 -c '
import json, sys

def version(text):
    # "1.90" and "1.90.0" are the same requirement.
    parts = [int(part) for part in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))

metadata = json.load(sys.stdin)
members = set(metadata["workspace_members"])
ours = {p["name"]: p.get("rust_version") for p in metadata["packages"] if p["id"] in members}
undeclared = sorted(name for name, declared in ours.items() if not declared)
if undeclared:
    sys.exit("no rust-version in the Cargo.toml of: " + ", ".join(undeclared))
if len(set(ours.values())) != 1:
    sys.exit("workspace members declare different rust-versions: " + repr(ours))
declared = next(iter(ours.values()))
newer = sorted(
    (version(p["rust_version"]), p["name"], p["version"], p["rust_version"])
    for p in metadata["packages"]
    if p["id"] not in members and p.get("rust_version")
    and version(p["rust_version"]) > version(declared)
)
if newer:
    lines = ["  %s %s needs Rust %s" % (name, v, needs) for _, name, v, needs in reversed(newer)]
    sys.exit(
        "locked dependencies need a newer compiler than our rust-version %s:\n" % declared
        + "\n".join(lines)
        + "\nraise rust-version in the root Cargo.toml ([workspace.package]) or hold them back"
    )
print("rust-version %s covers every locked dependency" % declared)
'
