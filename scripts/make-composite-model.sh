#!/usr/bin/env bash
# Builds the shipped real-data model, models/flow-ensemble-casme2.merb: each member's honest LOSO,
# their `mer ensemble` (its figures and its calibration), each member's model trained on every
# sample, the export of those as one graph with that calibration, and the bundle signed with the
# demo key.
#
#   scripts/make-composite-model.sh [DATA] [WORK_DIR] [--dataset composite|prepared] [--device cpu|cuda]
#
# DATA defaults to ../shared/data/composite-casme2 (the real CASME II part of the MEGC 2019
# composite set); WORK_DIR to target/composite-model. With `--dataset prepared` DATA is a
# `mer prepare --input flow-strain28` cache made from raw frames: the same recipe then gives a
# model whose inputs the device computes itself (the composite PNGs' it cannot). Reruns resume:
# finished LOSO folds are kept.
# SEEDS (default "1337 1338 1339") are the seeds of the flow-only SKD-TSTSAN recipe, AM3F_SEEDS
# (default "1337") those of the AM3F-FlowNet recipe: the shipped model's members. Two runs or
# more ship as one ensemble model; one alone (e.g. SEEDS=1337 AM3F_SEEDS=) as a single model,
# models/<arch>-casme2.merb.
# Cost on the 2-core build box, one libtorch thread, per seed: flow-only SKD-TSTSAN LOSO ~25 min
# (24 folds of 60-80 s) and its model on all samples ~1 min; AM3F-FlowNet ~100 min and ~5 min.
# With `--device cuda` on one GPU, ~10 min for all of them side by side. Export and bundle
# take seconds.
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

# The recipes, each fixed before its LOSO was run (docs/RESULTS.md, "Generalisation"): the
# flow-only SKD-TSTSAN with SKD-TSTSAN's optimiser and loss, and AM3F-FlowNet with its own
# (cosine-decayed rate, logit-adjusted loss), both 500 iterations of 32 with flip augmentation.
skd_seeds=(${SEEDS-1337 1338 1339})
am3f_seeds=(${AM3F_SEEDS-1337})
common=(--dataset "$dataset" --data "$data" --device "$device" --iters 500 --batch 32 --lr 1e-3 --augment flip)
skd=(--arch skd-tstsan-flow "${common[@]}" --weight-decay 5e-4)
am3f=(--arch am3f-flownet "${common[@]}" --lr-final 1e-5 --adam-beta2 0.999 --weight-decay 1e-4 --tau 1)
case "$((${#skd_seeds[@]} + ${#am3f_seeds[@]})),${#skd_seeds[@]}" in
    0,*) echo "no members: give SEEDS and/or AM3F_SEEDS" >&2; exit 2 ;;
    1,1) name=skd-tstsan-flow-casme2 ;;
    1,0) name=am3f-flownet-casme2 ;;
    *) name=flow-ensemble-casme2 ;;
esac
[ "$dataset" = composite ] || name="$name-frames"

bash scripts/bootstrap.sh
cargo build --locked -q -p mer-host
mer=target/debug/mer
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

loso=() models=()
member() { # PREFIX SEED RECIPE...: one member's LOSO and its model on all samples
    local prefix=$1 seed=$2; shift 2
    $mer train "$@" --seed "$seed" --out "$work/${prefix}loso-seed$seed"
    $mer train "$@" --seed "$seed" --all-samples --out "$work/${prefix}all-seed$seed"
    loso+=("$work/${prefix}loso-seed$seed") models+=("$work/${prefix}all-seed$seed/model.safetensors")
}
for seed in "${skd_seeds[@]}"; do member "" "$seed" "${skd[@]}"; done
for seed in "${am3f_seeds[@]}"; do member am3f- "$seed" "${am3f[@]}"; done
if [ ${#loso[@]} -gt 1 ]; then
    $mer ensemble "${loso[@]}" -o "$work/loso"
    ensemble=(--ensemble "${models[@]:1}")
else
    rm -rf "$work/loso" && cp -r "${loso[0]}" "$work/loso"
    ensemble=()
fi
$mer export "${models[0]}" "${ensemble[@]}" --evaluation "$work/loso" --model-version "$name-${#loso[@]}" -o "$work/$name.onnx"
$mer bundle "$work/$name.onnx" --key models/demo-key -o "models/$name.merb"
$mer bundle verify "models/$name.merb" --pub models/demo-key.pub --manifest >"models/$name.manifest.json"
cp "$work/loso/results.json" "models/$name.loso-results.json"
echo "wrote models/$name.merb (manifest and LOSO results beside it)"
