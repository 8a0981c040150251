#!/usr/bin/env bash
# Runs `audiopalm train` on every worker of a Cloud TPU VM slice.
#
#   launch/tpu_pod.sh --name my-v5p --zone us-east5-a --accelerator v5p-128 \
#       --version v2-alpha-tpuv5 -- --config configs/audiopalm_8b.py --workdir gs://bucket/run
#
# Creates the slice if it does not exist (reuses it otherwise), installs this repository
# on all workers, then starts the same train command on all of them (`--worker=all`);
# JAX finds the other hosts itself (`--config.distributed.auto=True`). Re-running the same
# command after a preemption resumes from the latest checkpoint in --workdir.
# --dry-run prints the gcloud commands instead of running them.
set -euo pipefail

name="" zone="" accelerator="" version="v2-alpha-tpuv5" project="" dry_run=0 spot=0
repo_url="${AUDIOPALM_REPO:-https://github.com/audiopalm-jax/audiopalm-jax.git}"
ref="${AUDIOPALM_REF:-main}"
usage="usage: launch/tpu_pod.sh --name NAME --zone ZONE --accelerator TYPE [--version V] \
[--project P] [--spot] [--dry-run] -- TRAIN_ARGS..."
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) name="$2"; shift 2 ;;
    --zone) zone="$2"; shift 2 ;;
    --accelerator) accelerator="$2"; shift 2 ;;
    --version) version="$2"; shift 2 ;;
    --project) project="$2"; shift 2 ;;
    --spot) spot=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    --) shift; break ;;
    -h|--help) echo "$usage"; exit 0 ;;
    *) echo "unknown argument $1; $usage" >&2; exit 2 ;;
  esac
done
for v in name zone accelerator; do
  [[ -n "${!v}" ]] || { echo "missing --$v; $usage" >&2; exit 2; }
done
[[ $# -gt 0 ]] || { echo "missing train arguments after --; $usage" >&2; exit 2; }

gc=(gcloud compute tpus tpu-vm)
common=(--zone="$zone")
[[ -n "$project" ]] && common+=(--project="$project")

run() {
  if [[ $dry_run -eq 1 ]]; then printf '%q ' "$@"; echo; else "$@"; fi
}

train_args=$(printf '%q ' "$@")
setup="set -e; if [ ! -d audiopalm-jax ]; then git clone $repo_url audiopalm-jax; fi; \
cd audiopalm-jax && git fetch -q origin && git checkout -q $ref && \
python3 -m pip install -q -e . 'jax[tpu]'"
train="cd audiopalm-jax && audiopalm train $train_args --config.distributed.auto=True"

if [[ $dry_run -eq 1 ]] || ! "${gc[@]}" describe "$name" "${common[@]}" >/dev/null 2>&1; then
  create=("${gc[@]}" create "$name" "${common[@]}" --accelerator-type="$accelerator"
          --version="$version")
  [[ $spot -eq 1 ]] && create+=(--spot)
  run "${create[@]}"
fi
run "${gc[@]}" ssh "$name" "${common[@]}" --worker=all --command="$setup"
run "${gc[@]}" ssh "$name" "${common[@]}" --worker=all --command="$train"
