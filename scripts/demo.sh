#!/usr/bin/env bash
# The main job: set-up if needed, then the device pipeline on a synthetic interview with the
# default model. Extra arguments go to `merd demo` (e.g. --seconds 60 --seed 4 --out DIR).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/bootstrap.sh
cargo run --locked -p mer-device --bin merd -- demo "$@"
