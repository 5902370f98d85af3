#!/usr/bin/env bash
# Builds the shipped real-data model, models/<arch>-casme2.merb: the recipe's honest LOSO (for its
# figures and its calibration), one model trained on every sample, the export with that
# calibration, and the bundle signed with the demo key.
#
#   scripts/make-composite-model.sh [DATA] [WORK_DIR] [--dataset composite|prepared] [--device cpu|cuda]
#
# DATA defaults to ../shared/data/composite-casme2 (the real CASME II part of the MEGC 2019
# composite set); WORK_DIR to target/composite-model. With `--dataset prepared` DATA is a
# `mer prepare --input flow-strain28` cache made from raw frames: the same recipe then gives a
# model whose inputs the device computes itself (the composite PNGs' it cannot). Reruns resume:
# finished LOSO folds are kept.
# Cost on the 2-core build box, one libtorch thread: LOSO ~25 min (24 folds of 60-80 s), the
# model on all samples ~1 min, export and bundle seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

data=../shared/data/composite-casme2
work=target/composite-model
dataset=composite
device=cpu
positional=0
while [ $# -gt 0 ]; do
    case "$1" in
        --dataset) dataset="$2"; shift ;;
        --device) device="$2"; shift ;;
        *) if [ $positional = 0 ]; then data="$1"; else work="$1"; fi; positional=$((positional + 1)) ;;
    esac
    shift
done

# The recipe, fixed before its LOSO was run: the flow-only SKD-TSTSAN with SKD-TSTSAN's
# optimiser and loss, 500 iterations of 32, flip augmentation (docs/RESULTS.md, "Generalisation").
arch=skd-tstsan-flow
recipe=(--arch "$arch" --dataset "$dataset" --data "$data" --device "$device" --iters 500 --batch 32
        --lr 1e-3 --weight-decay 5e-4 --augment flip --seed 1337)
name="$arch-casme2"
[ "$dataset" = composite ] || name="$arch-casme2-frames"

bash scripts/bootstrap.sh
cargo build --locked -q -p mer-host
mer=target/debug/mer
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

$mer train "${recipe[@]}" --out "$work/loso"
$mer train "${recipe[@]}" --all-samples --out "$work/all"
$mer export "$work/all/model.safetensors" --evaluation "$work/loso" --model-version "$name-1" -o "$work/$name.onnx"
$mer bundle "$work/$name.onnx" --key models/demo-key -o "models/$name.merb"
$mer bundle verify "models/$name.merb" --pub models/demo-key.pub --manifest >"models/$name.manifest.json"
cp "$work/loso/results.json" "models/$name.loso-results.json"
echo "wrote models/$name.merb (manifest and LOSO results beside it)"
