#!/usr/bin/env bash
# Installs what scripts/build-jetson.sh links with, idempotently, into the repo-local .venv:
# zig (PyPI's ziglang) and cargo-zigbuild (PyPI's prebuilt binary: seconds, where
# `cargo install` compiles for minutes on a 2-core CI machine). Pinned, because a new zig
# release has more than once broken cargo-zigbuild's linker wrapper.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

ziglang_version=0.15.2
zigbuild_version=0.24.1

say() { printf '[install-zigbuild] %s\n' "$*" >&2; }

# bootstrap.sh installs its requirements into the same venv later; an existing one is kept.
[ -x .venv/bin/python ] || { say "creating .venv"; python3 -m venv .venv; }
installed() { .venv/bin/python -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || true; }
if [ "$(installed ziglang)" != "$ziglang_version" ] || [ "$(installed cargo-zigbuild)" != "$zigbuild_version" ]; then
  say "installing ziglang $ziglang_version and cargo-zigbuild $zigbuild_version into .venv"
  .venv/bin/pip install -q --progress-bar off "ziglang==$ziglang_version" "cargo-zigbuild==$zigbuild_version"
fi

if ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
  say "adding Rust target aarch64-unknown-linux-gnu"
  rustup target add aarch64-unknown-linux-gnu
fi
