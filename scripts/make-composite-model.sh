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
# SEEDS (default "1337", the shipped model) are the seeds; several ship as one ensemble model.
# Cost on the 2-core build box, one libtorch thread, per seed: LOSO ~25 min (24 folds of
# 60-80 s), the model on all samples ~1 min; export and bundle seconds.
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
# optimiser and loss, 500 iterations of 32, flip augmentation (docs/RESULTS.md, "Generalisation"),
# trained with each of SEEDS; several seeds ship as one ensemble model (`mer export --ensemble`),
# described by the `mer ensemble` of their LOSO runs.
arch=skd-tstsan-flow
seeds=(${SEEDS:-1337})
recipe=(--arch "$arch" --dataset "$dataset" --data "$data" --device "$device" --iters 500 --batch 32
        --lr 1e-3 --weight-decay 5e-4 --augment flip)
name="$arch-casme2"
[ "$dataset" = composite ] || name="$arch-casme2-frames"

bash scripts/bootstrap.sh
cargo build --locked -q -p mer-host
mer=target/debug/mer
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

loso=() models=()
for seed in "${seeds[@]}"; do
    $mer train "${recipe[@]}" --seed "$seed" --out "$work/loso-seed$seed"
    $mer train "${recipe[@]}" --seed "$seed" --all-samples --out "$work/all-seed$seed"
    loso+=("$work/loso-seed$seed") models+=("$work/all-seed$seed/model.safetensors")
done
if [ ${#seeds[@]} -gt 1 ]; then
    $mer ensemble "${loso[@]}" -o "$work/loso"
    ensemble=(--ensemble "${models[@]:1}")
else
    rm -rf "$work/loso" && cp -r "${loso[0]}" "$work/loso"
    ensemble=()
fi
$mer export "${models[0]}" "${ensemble[@]}" --evaluation "$work/loso" --model-version "$name-${#seeds[@]}" -o "$work/$name.onnx"
$mer bundle "$work/$name.onnx" --key models/demo-key -o "models/$name.merb"
$mer bundle verify "models/$name.merb" --pub models/demo-key.pub --manifest >"models/$name.manifest.json"
cp "$work/loso/results.json" "models/$name.loso-results.json"
echo "wrote models/$name.merb (manifest and LOSO results beside it)"
