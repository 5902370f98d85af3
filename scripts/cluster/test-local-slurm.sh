#!/usr/bin/env bash
# scripts/cluster/slurm-loso.sh on a real (single-node) Slurm, as CI runs it:
#   1. a tiny prepared dataset (4 synthetic subjects) and the array of 2 shards submitted with sbatch;
#   2. one task requeued (killed and put back in the queue) once its first checkpoint exists:
#      Slurm restarts it and it resumes from that checkpoint;
#   3. `mer report` merges the shards, and every figure and every fold's predictions equal those
#      of the same LOSO run made in one process.
#
#   scripts/cluster/test-local-slurm.sh [WORK_DIR]     # default target/slurm-test; needs root
#
# Uses target/debug/mer (build it first; CARGO_TARGET_DIR is honoured) and scripts/cluster/local-slurm.sh for the cluster.
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"
work="${1:-target/slurm-test}"
rm -rf "$work" && mkdir -p "$work" && work="$(cd "$work" && pwd)"
target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
mer="$target/debug/mer"
[ -x "$mer" ] || { echo "test-local-slurm: build target/debug/mer first (cargo build -p mer-host)" >&2; exit 2; }

fail() { printf 'test-local-slurm: FAILED: %s\n' "$*" >&2; exit 1; }

# A cluster this test starts is stopped again when it ends; one already running is left alone.
if ! bash scripts/cluster/local-slurm.sh running; then
    trap 'bash scripts/cluster/local-slurm.sh stop' EXIT
fi
bash scripts/cluster/local-slurm.sh start
eval "$(bash scripts/cluster/local-slurm.sh env)"

"$mer" synth casme2 --out "$work/data" --subjects 4 --per-subject 4 --seed 3 >/dev/null
"$mer" prepare --dataset casme2 --root "$work/data" --crop none --input flow-strain28 --out "$work/cache" >/dev/null

# The recipe: long enough per fold (tens of seconds) for the requeue to land mid-fold.
export DATA="$work/cache" RUN="$work/run" MER="$mer" ARCH=skd-tstsan-flow DEVICE=cpu ITERS=300 CHECKPOINT_EVERY=20 SEED=5
recipe=(--arch "$ARCH" --data "$DATA" --device cpu --iters "$ITERS" --checkpoint-every "$CHECKPOINT_EVERY" --seed "$SEED")
jid=$(sbatch --parsable --array=1-2 --gres=none --cpus-per-task=1 --mem=2G --time=00:30:00 \
    --chdir="$work" --output="$work/shard-%a.out" scripts/cluster/slurm-loso.sh)
echo "submitted array job $jid (2 shards)"

# Requeue shard 2 as soon as its first checkpoint is on disk.
deadline=$((SECONDS + 600))
until compgen -G "$RUN/shards/2/folds/*/progress.json" >/dev/null; do
    [ $SECONDS -lt $deadline ] || fail "shard 2 wrote no checkpoint within 10 min: $(cat "$work/shard-2.out" 2>/dev/null | tail -5)"
    sleep 0.2
done
scontrol requeue "${jid}_2"
echo "requeued ${jid}_2 after its checkpoint $(compgen -G "$RUN/shards/2/folds/*/progress.json")"

while squeue -h -j "$jid" 2>/dev/null | grep -q .; do
    [ $SECONDS -lt $((deadline + 600)) ] || fail "the array did not finish: $(squeue -j "$jid")"
    sleep 1
done
restarts=$(scontrol show job "${jid}_2" | grep -o 'Restarts=[0-9]*' | head -1)
[ "$restarts" = "Restarts=1" ] || fail "task 2 shows $restarts, not one restart"
for task in 1 2; do
    state=$(scontrol show job "${jid}_$task" | grep -o 'JobState=[A-Z]*' | head -1)
    [ "$state" = "JobState=COMPLETED" ] || fail "task $task ended $state: $(tail -5 "$work/shard-$task.out")"
done
[ "$(grep -c 'slurm-loso: job' "$work/shard-2.out")" = 2 ] || fail "shard 2's log does not show two starts"
grep -q 'resuming from its checkpoint' "$work/shard-2.out" || fail "the requeued task did not resume from its checkpoint"
echo "task 2 was restarted once and resumed: $(grep -o 'fold [^:]*: resuming.*' "$work/shard-2.out")"

"$mer" report "$RUN"/shards/1 "$RUN"/shards/2 --out "$RUN/merged" >/dev/null
OMP_NUM_THREADS=1 "$mer" train "${recipe[@]}" --out "$work/single" >/dev/null 2>&1

# The merged run must be the single run: every figure, and each fold's predictions.
python3 - "$RUN/merged" "$work/single" <<'EOF'
import json, pathlib, sys
merged, single = map(pathlib.Path, sys.argv[1:])
a, b = (json.loads((d / "results.json").read_text()) for d in (merged, single))
assert a["complete"] and len(a["shards"]) == 2, a["shards"]
for key in a:
    if key not in ("shards",) and a[key] != b[key]:
        sys.exit(f"results.json differ in {key}: {a[key]} vs {b[key]}")
for fold in sorted((single / "folds").iterdir()):
    x, y = (json.loads((d / "folds" / fold.name / "fold.json").read_text()) for d in (merged, single))
    x.pop("seconds"), y.pop("seconds")
    if x != y:
        sys.exit(f"fold {fold.name} differs between the merged shards and the single run")
print(f"merged shards = single run: {a['samples']} samples, {len(a['folds'])} folds, UF1 {a['uf1']:.4f}, UAR {a['uar']:.4f}")
EOF
echo "local Slurm LOSO test passed"
