#!/usr/bin/env bash
# The main job: set-up if needed, then the end-to-end demo on synthetic data.
# Extra arguments go to `mer demo` (e.g. --out DIR --seed N).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/bootstrap.sh
cargo run --locked -p mer-host --bin mer -- demo "$@"
