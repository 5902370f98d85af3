#!/usr/bin/env bash
# The whole test suite: set-up if needed, native tests (including the OpenCV reference tests),
# the aarch64 device build, and the shared/device unit tests under qemu-aarch64.
# (scripts/build-jetson.sh, the glibc-2.27 release build, is not run here yet: on a fresh clone
# bindgen cannot find linux/videodev2.h under zig's headers.)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/bootstrap.sh

# A missing reference (OpenCV venv) must fail here, not quietly skip.
export MER_REQUIRE_REFERENCE=1
step() { printf '\n=== %s\n' "$*"; }

step "formatting and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "native tests (all crates)"
cargo test --workspace --locked

step "device build for Jetson (aarch64-unknown-linux-gnu)"
cargo build --locked -p mer-device --target aarch64-unknown-linux-gnu

step "mer-shared and mer-device tests under qemu-aarch64"
# The device's CLI tests start `merd`, which qemu-user cannot exec from an emulated process; they
# run natively above, and the device library's own tests run here. The spotting evaluations on
# synthetic clips (spots_synthetic, the_megc_baseline) and the pipeline and push tests (each loads and runs the model several times) take tens of seconds
# natively and over twenty minutes emulated; they run natively above. The model on aarch64 is
# exercised by the emulated end-to-end run recorded in docs/BENCHMARKS.md, not by this suite.
cargo test --locked -p mer-shared --target aarch64-unknown-linux-gnu
cargo test --locked -p mer-device --lib --target aarch64-unknown-linux-gnu -- --skip spots_synthetic --skip the_megc_baseline --skip pipeline:: --skip push_tests::
