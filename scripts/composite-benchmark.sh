#!/usr/bin/env bash
# LOSO on the composite CASME II flow images for the three flow-image architectures, honest and
# paper protocol, with the hyperparameters fixed in docs/RESULTS.md before any test subject was
# looked at. Every run resumes where it stopped when the command is repeated.
#   scripts/composite-benchmark.sh [DATA] [OUT] [--device cpu|cuda|auto] [ARCH...]
# DATA defaults to ../shared/data/composite-casme2, OUT to out/composite; ARCH to all three.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
data="${1:-../shared/data/composite-casme2}"; out="${2:-out/composite}"; shift $(( $# > 2 ? 2 : $# ))
device=auto
if [ "${1:-}" = "--device" ]; then device="$2"; shift 2; fi
archs=("$@"); [ ${#archs[@]} -gt 0 ] || archs=(skd-tstsan-flow am3f-flownet htnet)
[ -f "$data/combined_3_class2_for_optical_flow.csv" ] || { echo "no composite data at $data" >&2; exit 1; }
bash scripts/bootstrap.sh
cargo build --locked -q -p mer-host
mer=target/debug/mer

recipe() {
    case "$1" in
        # SKD-TSTSAN's optimiser and loss settings; 500 iterations of 32 (about 115 epochs).
        skd-tstsan-flow) echo "--iters 500 --batch 32 --lr 1e-3 --weight-decay 5e-4" ;;
        # Reconstruction R1: Adam 1e-3 -> cosine to 1e-5 (PyTorch's betas), weight decay 1e-4, batch 32, about 100 epochs, tau 1.
        am3f-flownet) echo "--iters 500 --batch 32 --lr 1e-3 --lr-final 1e-5 --adam-beta2 0.999 --weight-decay 1e-4 --tau 1" ;;
        # The official script: Adam 5e-5 with PyTorch's betas, no weight decay, batch 256 (one batch per epoch here), 800 epochs.
        htnet) echo "--iters 800 --batch 256 --lr 5e-5 --adam-beta2 0.999 --weight-decay 0" ;;
        *) echo "unknown architecture $1" >&2; exit 1 ;;
    esac
}

for arch in "${archs[@]}"; do
    for protocol in honest paper; do
        run="$out/$arch-$protocol"
        echo "=== $arch, $protocol protocol -> $run"
        # shellcheck disable=SC2046
        $mer train --arch "$arch" --dataset composite --data "$data" --out "$run" --protocol "$protocol" \
            --device "$device" --seed 1337 --checkpoint-every 100 $(recipe "$arch")
    done
done
