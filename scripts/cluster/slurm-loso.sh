#!/usr/bin/env bash
# Leave-one-subject-out training as a Slurm job array. Array task i of N runs
#   mer train ... --fold i/N --out "$RUN/shards/i"
# i.e. the LOSO folds of every N-th subject (sorted subjects, subject k goes to shard k mod N + 1).
# The shards are merged afterwards by `mer report`; see docs/SCALE_OUT.md.
#
# Configuration comes from the environment (sbatch exports the submitting shell's environment):
#   DATA      required  prepared data cache (the --data of `mer train`), on storage every node sees
#   RUN       required  run directory; shard i writes $RUN/shards/i
#   MER       optional  path to the mer binary (default: $SLURM_SUBMIT_DIR/target/release/mer)
#   SHARDS    optional  number of shards N (default: the size of the array, which must be 1-N);
#                       required when resubmitting only some tasks, e.g. --array=3
#   ITERS     optional  --iters for every fold
#   PROTOCOL  optional  honest | paper
#   SEED      optional  --seed
#   CHECKPOINT_EVERY optional --checkpoint-every (iterations between resumable checkpoints)
#   ARCH      optional  --arch (default skd-tstsan)
#   DEVICE    optional  --device (default cuda, so a node without a working GPU fails loudly
#                       instead of training on its CPU)
#   TORCH_LIB optional  directory with libtorch*.so, prepended to LD_LIBRARY_PATH; needed when the
#                       binary's rpath (the build machine's .venv) does not exist on the nodes
#
# Submit 8 shards, then the merge as a job that starts only if all 8 succeed (from the repo root):
#   export DATA=/shared/mer/cache RUN=/shared/mer/runs/casme2-honest ITERS=20000 PROTOCOL=honest
#   export MER=$PWD/target/release/mer
#   jid=$(sbatch --parsable --array=1-8 scripts/cluster/slurm-loso.sh)
#   sbatch --dependency=afterok:"$jid" --job-name=mer-merge --time=00:30:00 \
#          --wrap="'$MER' report '$RUN'/shards/* --out '$RUN/merged'"
# (With TORCH_LIB, also export LD_LIBRARY_PATH=$TORCH_LIB before the second sbatch: `mer report`
# does not train, but the binary still loads libtorch when it starts.)
#
# Rerun one failed shard (same RUN; training resumes from the shard's checkpoints):
#   SHARDS=8 sbatch --array=3 scripts/cluster/slurm-loso.sh
#
# Site-specific settings (partition, account, GPU type) go on the sbatch command line, which
# overrides the defaults below.
#SBATCH --job-name=mer-loso
#SBATCH --array=1-8
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=12:00:00
#SBATCH --output=%x-%A_%a.out
# A requeued task (node failure, preemption, scontrol requeue) resumes from its checkpoints and
# appends to the same log, so both attempts can be read.
#SBATCH --open-mode=append
set -euo pipefail

die() { printf 'slurm-loso: %s\n' "$*" >&2; exit 2; }
need() { [ -n "${!1:-}" ] || die "$1 is not set; $2"; }
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

need SLURM_ARRAY_TASK_ID "submit this script as an array job: sbatch --array=1-N $0"
need DATA "export DATA=<prepared data cache> before sbatch"
need RUN "export RUN=<run directory> before sbatch"
[ -d "$DATA" ] || die "DATA=$DATA is not a directory on $(hostname)"

task=$SLURM_ARRAY_TASK_ID
if [ -z "${SHARDS:-}" ]; then
  # Without SHARDS the array itself defines N, which is only safe for a full 1-N array.
  count=${SLURM_ARRAY_TASK_COUNT:?Slurm did not set SLURM_ARRAY_TASK_COUNT; set SHARDS}
  if [ "${SLURM_ARRAY_TASK_MIN:-1}" != 1 ] || [ "${SLURM_ARRAY_TASK_MAX:-$count}" != "$count" ]; then
    die "the array is not 1-$count (min ${SLURM_ARRAY_TASK_MIN:-?}, max ${SLURM_ARRAY_TASK_MAX:-?}); set SHARDS to the total number of shards"
  fi
  SHARDS=$count
fi
is_uint "$SHARDS" && [ "$SHARDS" -ge 1 ] || die "SHARDS=$SHARDS is not a positive integer"
is_uint "$task" && [ "$task" -ge 1 ] && [ "$task" -le "$SHARDS" ] \
  || die "array task $task is outside 1..$SHARDS; use --array=1-$SHARDS"

MER=${MER:-${SLURM_SUBMIT_DIR:-.}/target/release/mer}
[ -x "$MER" ] || die "MER=$MER is not an executable; build it with 'cargo build --release -p mer-host' or set MER"
if [ -n "${TORCH_LIB:-}" ]; then
  [ -d "$TORCH_LIB" ] || die "TORCH_LIB=$TORCH_LIB is not a directory"
  export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
# libtorch sizes its CPU thread pool from this; without it every task would claim the whole node.
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-${OMP_NUM_THREADS:-1}}

args=(train --arch "${ARCH:-skd-tstsan}" --data "$DATA" --out "$RUN/shards/$task"
      --fold "$task/$SHARDS" --device "${DEVICE:-cuda}")
if [ -n "${ITERS:-}" ]; then
  is_uint "$ITERS" || die "ITERS=$ITERS is not a non-negative integer"
  args+=(--iters "$ITERS")
fi
if [ -n "${PROTOCOL:-}" ]; then
  case $PROTOCOL in honest | paper) ;; *) die "PROTOCOL=$PROTOCOL must be honest or paper" ;; esac
  args+=(--protocol "$PROTOCOL")
fi
[ -z "${SEED:-}" ] || args+=(--seed "$SEED")
if [ -n "${CHECKPOINT_EVERY:-}" ]; then
  is_uint "$CHECKPOINT_EVERY" && [ "$CHECKPOINT_EVERY" -ge 1 ] || die "CHECKPOINT_EVERY=$CHECKPOINT_EVERY is not a positive integer"
  args+=(--checkpoint-every "$CHECKPOINT_EVERY")
fi

mkdir -p "$RUN/shards"
# All tasks of one run must agree on N, or shards would overlap and leave subjects out. The first
# task to start records N; every later task (including reruns) checks against it.
count_file="$RUN/shards/.count"
if [ -f "$count_file" ]; then
  recorded=$(<"$count_file")
  [ "$recorded" = "$SHARDS" ] || die "$RUN was started with $recorded shards, this task has SHARDS=$SHARDS"
else
  printf '%s\n' "$SHARDS" >"$count_file"
fi

printf 'slurm-loso: job %s task %s/%s on %s: %s %s\n' \
  "${SLURM_ARRAY_JOB_ID:-?}" "$task" "$SHARDS" "$(hostname)" "$MER" "${args[*]}" >&2
"$MER" info >&2 || die "\"$MER info\" failed on $(hostname); is libtorch found (see TORCH_LIB)?"
exec "$MER" "${args[@]}"
