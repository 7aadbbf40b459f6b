#!/usr/bin/env bash
# Fuzzes jetsource's event decoding with cargo-fuzz (libFuzzer) on the stable toolchain.
#
#   bash scripts/fuzz.sh                      # short run: 30 s (CI)
#   FUZZ_SECONDS=3600 bash scripts/fuzz.sh    # long run: one hour
#
# cargo-fuzz needs nightly-only compiler flags (sanitizer coverage); RUSTC_BOOTSTRAP=1 lets the
# stable compiler accept them, and `-s none` skips AddressSanitizer, which stable cannot link.
# The decoders are safe Rust, so the run looks for panics and wrong error variants, not memory
# errors. Findings land in fuzz/artifacts/decode/; the corpus grows in fuzz/corpus/decode/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --version 0.13.2 --locked
fi

export RUSTC_BOOTSTRAP=1
seconds="${FUZZ_SECONDS:-30}"
cargo fuzz build -s none decode
cargo fuzz run -s none decode -- -max_total_time="$seconds"
