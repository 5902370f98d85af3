#!/usr/bin/env bash
# Installs everything the workspace needs, idempotently: Debian packages, the aarch64 Rust
# target, a repo-local Python venv (.venv) with libtorch and the reference tools, and the crate
# sources.
# Safe to run repeatedly: each step checks first and is skipped when already done.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

say() { printf '[bootstrap] %s\n' "$*" >&2; }

# --- Debian packages -------------------------------------------------------------------------
# fonts-dejavu-core: DejaVu Sans, read at run time for the text of PNG report plots.
apt_pkgs=(pkg-config libclang-dev gcc-aarch64-linux-gnu libc6-dev-arm64-cross
          linux-libc-dev-arm64-cross qemu-user python3-venv fonts-dejavu-core)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing Debian packages: ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- Rust target for the Jetson build ----------------------------------------------------------
if ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
  say "adding Rust target aarch64-unknown-linux-gnu"
  rustup target add aarch64-unknown-linux-gnu
fi

# --- rustfmt and clippy, which the tests run -------------------------------------------------
for component in rustfmt clippy; do
  if ! rustup component list --installed | grep -q "^$component"; then
    say "adding Rust component $component"
    rustup component add "$component"
  fi
done

# --- Python venv: libtorch for tch, OpenCV/ONNX for reference tests ---------------------------
req="scripts/requirements-reference.txt"
stamp=".venv/.installed-$(sha256sum "$req" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  say "creating .venv with $(grep -v '^#' "$req" | tr '\n' ' ')(torch is ~5 GB; first run takes minutes)"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q --progress-bar off -r "$req"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
# --- zig and cargo-zigbuild for the Jetson release build (scripts/build-jetson.sh) -------------
bash scripts/install-zigbuild.sh

# --- Crate sources -----------------------------------------------------------------------------
# mer-shared's build script locates the face model with `cargo metadata --offline`, which needs
# every package of the workspace downloaded, not only those of the one being built.
cargo fetch --locked -q

say "ready"
