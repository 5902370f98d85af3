#!/usr/bin/env bash
# Rebuilds models/skd-tstsan-synthetic.merb: the default model, trained by this project's own
# trainer on synthetic CASME II-layout data and signed with the demo key in models/.
#
#   scripts/make-default-model.sh [WORK_DIR]
#
# Steps: synthetic data → preparation → honest LOSO evaluation of the recipe → one model on all
# samples with the same recipe → export (checked against tract) → bundle signed with the demo key.
# About 25 minutes on a 2-core machine, most of it the LOSO evaluation.
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-target/default-model}"
mkdir -p "$work"
./scripts/bootstrap.sh
cargo build --release --locked -p mer-host
mer=target/release/mer

# Recipe: the official SKD-TSTSAN settings except the budget (100 iterations of batch 16).
recipe=(--iters 100 --batch 16 --seed 1337 --device cpu)

[ -d "$work/syn" ] || $mer synth casme2 --out "$work/syn" --subjects 10 --per-subject 12 --seed 5
$mer prepare --dataset casme2 --root "$work/syn" --crop none --out "$work/syn-cache"
$mer train --data "$work/syn-cache" --out "$work/loso" "${recipe[@]}"
$mer train --data "$work/syn-cache" --out "$work/run-all" --all-samples "${recipe[@]}"
$mer export "$work/run-all/model.safetensors" --evaluation "$work/loso" \
    --model-version skd-tstsan-synthetic-1 -o "$work/skd-tstsan-synthetic.onnx"
$mer bundle "$work/skd-tstsan-synthetic.onnx" --key models/demo-key -o models/skd-tstsan-synthetic.merb
$mer bundle verify models/skd-tstsan-synthetic.merb --pub models/demo-key.pub
$mer bundle verify models/skd-tstsan-synthetic.merb --pub models/demo-key.pub --manifest > models/skd-tstsan-synthetic.manifest.json
cp "$work/loso/results.json" models/skd-tstsan-synthetic.loso-results.json
