#!/usr/bin/env bash
# Device benchmarks (docs/BENCHMARKS.md): a release `merd run` on synthetic 640×480 interviews
# with face detection and the default model.
#   1. sustained throughput at 200 fps in real time, from a clip rendered into memory first
#      (frames the pipeline is too late for are dropped, as with a camera), and the per-event
#      latency breakdown;
#   2. resident memory over an hour of simulated stream (100 fps, as fast as it runs).
# Usage: scripts/bench-device.sh [SECONDS_AT_200FPS=60] [STREAM_SECONDS=3600]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
realtime_s="${1:-60}"
stream_s="${2:-3600}"
out="$root/out/bench-device"
rm -rf "$out" && mkdir -p "$out"

bash scripts/bootstrap.sh
cargo build --release --locked -p mer-device --bin merd
merd="$root/target/release/merd"

config() { # name fps seconds realtime prerender
    cat > "$out/$1.toml" <<EOF
[source]
kind = "synthetic"
fps = $2
seconds = $3
seed = 1
realtime = $4
prerender = $5
[model]
path = "$root/models/skd-tstsan-synthetic.merb"
public_keys = ["$root/models/demo-key.pub"]
[log]
dir = "$out/$1-events"
fsync = "always"
EOF
}

echo "== $realtime_s s at 200 fps, 640x480, in real time"
config realtime 200 "$realtime_s" true true
"$merd" run --config "$out/realtime.toml" > "$out/realtime.out" 2> "$out/realtime.err"
grep "frames in" "$out/realtime.err"
"$merd" events --log "$out/realtime-events" --json > "$out/realtime-events.jsonl"
python3 - "$out/realtime-events.jsonl" <<'EOF'
import json, statistics, sys
events = [json.loads(line) for line in open(sys.argv[1])]
print(f"{len(events)} events; latency in ms, median / max:")
for key in ["spotting_ms", "preprocess_ms", "inference_ms", "total_ms"]:
    values = [e["latency"][key] for e in events]
    if values:
        print(f"  {key:14} {statistics.median(values):7.1f} / {max(values):7.1f}")
EOF

echo "== $stream_s s of stream at 100 fps, as fast as it runs: resident memory"
config stream 100 "$stream_s" false false
"$merd" run --config "$out/stream.toml" > "$out/stream.out" 2> "$out/stream.err" &
pid=$!
start=$(date +%s)
echo "elapsed_s,rss_kib" > "$out/rss.csv"
while kill -0 "$pid" 2>/dev/null; do
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [ -n "$rss" ] && echo "$(( $(date +%s) - start )),$rss" >> "$out/rss.csv"
    sleep 10
done
wait "$pid"
grep "frames in" "$out/stream.err"
python3 - "$out/rss.csv" <<'EOF'
import csv, sys
rows = [(int(r["elapsed_s"]), int(r["rss_kib"])) for r in csv.DictReader(open(sys.argv[1]))]
if rows:
    first_min = [kib for s, kib in rows if s >= 60][:1] or [rows[0][1]]
    print(f"RSS after 1 min {first_min[0] / 1024:.0f} MiB, at the end ({rows[-1][0]} s) {rows[-1][1] / 1024:.0f} MiB, "
          f"max {max(k for _, k in rows) / 1024:.0f} MiB ({len(rows)} samples in {sys.argv[1]})")
EOF
