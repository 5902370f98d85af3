#!/usr/bin/env bash
# The whole test suite: set-up if needed, native tests (including the OpenCV reference tests),
# the Slurm job array on a local single-node Slurm, the aarch64 device build, the release build for old JetPacks with its glibc check and a demo
# run under qemu, and the shared/device unit tests under qemu-aarch64.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/bootstrap.sh

# A missing reference (OpenCV venv) must fail here, not quietly skip.
export MER_REQUIRE_REFERENCE=1
# Each step says when it starts, so a slow CI run shows where its time went.
step() { printf '\n=== %s [%s, %d min in]\n' "$*" "$(date +%T)" $((SECONDS / 60)); }

step "formatting and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "native tests (all crates)"
cargo test --workspace --locked

step "LOSO as a job array on a local single-node Slurm: requeue mid-fold, merge equals one run"
# target/debug/mer is the binary the native tests just built (a `cargo build -p mer-host` here
# would resolve other features and rebuild half the workspace).
bash scripts/cluster/test-local-slurm.sh

step "aarch64 build of the device and shared crates with their tests (aarch64-unknown-linux-gnu)"
# One cargo invocation for both crates: built separately, each resolves other features of the
# shared dependencies and recompiles them (three builds took 27 minutes on 2 cores, this one 10).
# It also links the plain Debian-cross merd (debug/merd) that the integration tests use.
aarch64_tests=(-p mer-shared -p mer-device --target aarch64-unknown-linux-gnu)
cargo test --locked "${aarch64_tests[@]}" --no-run

step "release merd for Jetson boards, linked against glibc 2.27 (scripts/build-jetson.sh)"
bash scripts/build-jetson.sh
# Debian 12's cross gcc links the build above against glibc 2.36: the check must refuse it, or
# its pass on the release build proves nothing.
if bash scripts/check-glibc.sh "${CARGO_TARGET_DIR:-target}/aarch64-unknown-linux-gnu/debug/merd" 2.27 >/dev/null; then
  echo "check-glibc.sh passed a binary linked against Debian's glibc" >&2
  exit 1
fi
# The release binary starts under emulation with a real aarch64 loader: every symbol resolves.
qemu-aarch64 -L /usr/aarch64-linux-gnu "${CARGO_TARGET_DIR:-target}/aarch64-unknown-linux-gnu/device/merd" --version

step "mer-shared and mer-device tests under qemu-aarch64"
# The device's CLI tests start `merd`, which qemu-user cannot exec from an emulated process; they
# run natively above, and the libraries' own tests (and mer-shared's property tests) run here.
# The spotting evaluations on synthetic clips (spots_synthetic, the_megc_baseline) and the
# pipeline and push tests (each loads and runs the model several times) take tens of seconds
# natively and over twenty minutes emulated; they run natively above. The model on aarch64 is
# exercised by the emulated end-to-end run recorded in docs/BENCHMARKS.md, not by this suite; so
# the two library tests that load the default model (three times, and twice) run natively only.
cargo test --locked "${aarch64_tests[@]}" --lib --test properties -- \
    --skip classifier::tests::a_file_loads_as_its_bytes_do \
    --skip inference::tests::weights_put_in_afterwards_compute_exactly_what_tract_alone_does \
    --skip spots_synthetic --skip the_megc_baseline --skip pipeline:: --skip push_tests::

step "all passed in $((SECONDS / 60)) min"
