#!/usr/bin/env bash
# The merd that goes on a board: the aarch64 release build (cargo profile `device`, without
# debug info), linked by zig against glibc 2.27's symbol versions, so that one binary starts on
# JetPack 4.6 (Ubuntu 18.04, glibc 2.27), 5.1 (glibc 2.31) and 6 (glibc 2.35). Debian 12's cross
# gcc links against its own glibc 2.36, and that binary needs GLIBC_2.34/2.35.
# Prints the binary's path; fails if it needs anything newer than glibc 2.27.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

target=aarch64-unknown-linux-gnu
glibc=2.27

bash scripts/install-zigbuild.sh
# cargo-zigbuild runs zig as `$CARGO_ZIGBUILD_PYTHON_PATH -m ziglang`: the venv's, not whatever
# `zig` or `python3` comes first on PATH.
export CARGO_ZIGBUILD_PYTHON_PATH="$root/.venv/bin/python"
# cargo-zigbuild hands bindgen the include paths `zig cc -v` prints, and zig prints them relative
# to the working directory when they lie below it: from the repository root that would be
# ".venv/...", which the v4l2 bindings' build script (run in its own folder) cannot find. From
# device/ they come out absolute, and cargo still finds the workspace and .cargo/config.toml.
cd "$root/device"
# The ".2.27" suffix selects the glibc version; cargo itself sees the plain target, so the output
# lands in the usual target/aarch64-unknown-linux-gnu/device/.
"$root/.venv/bin/cargo-zigbuild" zigbuild --locked --profile device -p mer-device --bin merd --target "$target.$glibc"

cd "$root"
bin="${CARGO_TARGET_DIR:-target}/$target/device/merd"
echo "built $bin ($(du -h "$bin" | cut -f1))"
aarch64-linux-gnu-objdump -p "$bin" 2>/dev/null | awk '/NEEDED/ { print "  needs " $2 }' || true
bash scripts/check-glibc.sh "$bin" "$glibc"
