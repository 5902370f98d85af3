#!/usr/bin/env bash
# Installs merd on a device as a systemd service running as the unprivileged user `merd`.
#
#   sudo deploy/install.sh --binary merd --model model.merb --key site.pub [--config FILE] [--no-start]
#   deploy/install.sh --root DIR ...      # stage the same files under DIR (no users, no systemctl)
#
# Safe to run again: the binary, unit, model and key are replaced; an edited /etc/merd/merd.toml
# is kept (the new one is written beside it as merd.toml.new).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() { sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "install.sh: $*" >&2; exit 1; }

root="" binary="" model="" key="" config="$here/merd.jetson.toml" start=1
while [ $# -gt 0 ]; do
    case "$1" in
        --root) root="${2:?--root needs a directory}"; shift 2 ;;
        --binary) binary="${2:?--binary needs a file}"; shift 2 ;;
        --model) model="${2:?--model needs a file}"; shift 2 ;;
        --key) key="${2:?--key needs a file}"; shift 2 ;;
        --config) config="${2:?--config needs a file}"; shift 2 ;;
        --no-start) start=0; shift ;;
        -h|--help) usage 0 ;;
        *) echo "install.sh: unknown argument $1" >&2; usage 2 ;;
    esac
done
[ -n "$binary" ] || die "--binary is required (e.g. target/aarch64-unknown-linux-gnu/device/merd from scripts/build-jetson.sh)"
[ -n "$model" ] || die "--model is required (a signed .merb bundle)"
[ -n "$key" ] || die "--key is required (the public key the bundle is signed with)"
for f in "$binary" "$model" "$key" "$config" "$here/merd.service" "$here/99-merd-gpio.rules"; do
    [ -f "$f" ] || die "$f does not exist"
done

if [ -z "$root" ]; then
    [ "$(id -u)" -eq 0 ] || die "run as root (sudo), or stage with --root DIR"
    # A binary for another architecture fails here rather than in a restart loop.
    # The loader's own message tells a missing GLIBC_x.y apart from a wrong architecture.
    ran=$("$binary" --version 2>&1) || die "$binary does not run on this machine ($(uname -m)): ${ran:-no output}; build it with scripts/build-jetson.sh"
fi

step() { echo "[install] $*"; }

if [ -z "$root" ]; then
    for group in video gpio; do
        getent group "$group" >/dev/null || { step "creating group $group"; groupadd --system "$group"; }
    done
    if ! id merd >/dev/null 2>&1; then
        step "creating user merd"
        useradd --system --user-group --no-create-home --home-dir /var/lib/merd --shell /usr/sbin/nologin merd
    fi
    usermod -a -G video,gpio merd
fi

step "binary -> $root/usr/local/bin/merd"
install -D -m 0755 "$binary" "$root/usr/local/bin/merd"
if [ -f "$here/../README.md" ]; then
    install -D -m 0644 "$here/../README.md" "$root/usr/local/share/doc/merd/README.md"
fi

step "configuration -> $root/etc/merd/"
install -d -m 0755 "$root/etc/merd" "$root/etc/merd/keys"
install -m 0644 "$key" "$root/etc/merd/keys/site.pub"
if [ -f "$root/etc/merd/merd.toml" ] && ! cmp -s "$config" "$root/etc/merd/merd.toml"; then
    install -m 0644 "$config" "$root/etc/merd/merd.toml.new"
    step "kept the existing merd.toml; the new one is merd.toml.new"
else
    install -m 0644 "$config" "$root/etc/merd/merd.toml"
fi

step "model -> $root/var/lib/merd/model.merb"
install -d -m 0750 "$root/var/lib/merd" "$root/var/lib/merd/events"
install -m 0644 "$model" "$root/var/lib/merd/model.merb"
[ -n "$root" ] || chown -R merd:merd /var/lib/merd

step "systemd unit and udev rule"
install -D -m 0644 "$here/merd.service" "$root/etc/systemd/system/merd.service"
install -D -m 0644 "$here/99-merd-gpio.rules" "$root/etc/udev/rules.d/99-merd-gpio.rules"

if [ -z "$root" ]; then
    udevadm control --reload-rules && udevadm trigger --subsystem-match=gpio || true
    systemctl daemon-reload
    if [ "$start" -eq 1 ]; then
        systemctl enable merd.service
        systemctl restart merd.service
        step "started; follow it with: journalctl -u merd -f   and   merd status --socket /run/merd/merd.sock"
    else
        step "installed, not started: systemctl enable --now merd"
    fi
else
    step "staged under $root"
fi
