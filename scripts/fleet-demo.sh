#!/usr/bin/env bash
# Two merd daemons on this machine play a fleet: a model is trained, exported and signed on the
# host, the daemons are enrolled, the model pushed to both while they run, checked with
# `mer devices`, and rolled back on one. The host's list of enrolled devices is kept in the
# output folder, not in ~/.config.
# Everything goes to out/fleet-demo (emptied first); the daemons are stopped at the end.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/bootstrap.sh
cargo build --locked -q -p mer-host -p mer-device
mer=target/debug/mer merd=target/debug/merd out=out/fleet-demo
rm -rf "$out" && mkdir -p "$out"
step() { printf '\n=== %s\n' "$*"; }

step "a model trained on synthetic data, exported and signed with the demo key"
$mer synth casme2 --out "$out/data" --subjects 3 --per-subject 4 --seed 4 >/dev/null
$mer prepare --dataset casme2 --root "$out/data" --crop none --out "$out/cache" >/dev/null
$mer train --data "$out/cache" --out "$out/run" --all-samples --iters 8 --batch 4 --device cpu >/dev/null
$mer export "$out/run/model.safetensors" -o "$out/model.onnx" --model-version fleet-demo-1 | tail -1
$mer bundle "$out/model.onnx" --key models/demo-key -o "$out/model.merb"

pids=()
stop() { kill -TERM "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true; }
trap stop EXIT
for room in 1 2; do
    mkdir -p "$out/room-$room"
    cat > "$out/room-$room/merd.toml" <<TOML
[source]
kind = "synthetic"
seconds = 600
fps = 100
width = 320
height = 240
seed = $room
[face]
roi = [115, 68, 89, 102]
[model]
path = "$root/models/skd-tstsan-synthetic.merb"
public_keys = ["$root/models/demo-key.pub"]
[log]
dir = "events"
[control]
socket = "merd.sock"
[push]
listen = "127.0.0.1:780$room"
store = "models"
name = "room-$room"
TOML
    $merd run --config "$out/room-$room/merd.toml" >"$out/room-$room/stdout" 2>"$out/room-$room/stderr" &
    pids+=($!)
done
fleet=127.0.0.1:7801,127.0.0.1:7802
for room in 1 2; do
    until grep -q "listening for model pushes" "$out/room-$room/stderr"; do sleep 0.2; done
done
sleep 2
export MER_KEY=models/demo-key MER_KNOWN_DEVICES="$out/known-devices.toml"

step "each device's key, as merd key shows it on the device"
for room in 1 2; do $merd key --config "$out/room-$room/merd.toml" | grep fingerprint; done
step "enrol both devices (the fingerprints must match the ones above)"
$mer devices enroll $fleet
step "the fleet before"
$mer devices --to $fleet
step "push"
$mer push "$out/model.merb" --to $fleet
sleep 2
for room in 1 2; do $merd trigger --socket "$out/room-$room/merd.sock" >/dev/null; done
sleep 2
step "the fleet after"
$mer devices --to $fleet
step "rollback on room-2"
$mer rollback --to 127.0.0.1:7802
$mer devices --to $fleet
step "the events come home (a second pull adds nothing)"
$mer events pull --from $fleet --out "$out/pulled"
$mer events pull --from $fleet --out "$out/pulled"
stop
trap - EXIT
step "events by model version (room-1, room-2)"
for room in 1 2; do
    $merd events --log "$out/room-$room/events" --json 2>/dev/null | grep -o '"model_version":"[^"]*"' | sort | uniq -c
done
