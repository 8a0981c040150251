#!/usr/bin/env bash
# Runs one command as N JAX processes on this machine (127.0.0.1), e.g. to test multi-host
# code paths on a CPU box:
#
#   launch/local.sh -n 2 -d 4 -- audiopalm train --config configs/tiny.py --workdir /tmp/run
#
# Each process gets `--config.distributed.*` overrides (coordinator 127.0.0.1:PORT,
# num_processes, process_id) and, on CPU, D simulated devices. Logs go to
# $LOG_DIR/process_<i>.log (default: a temp dir, printed). Exits non-zero if any process
# fails; the other processes are then stopped.
set -euo pipefail

num=2
devices=4
port=""
usage="usage: launch/local.sh [-n NUM_PROCESSES] [-d DEVICES_PER_PROCESS] [-p PORT] -- COMMAND..."
while [[ $# -gt 0 ]]; do
  case "$1" in
    -n) num="$2"; shift 2 ;;
    -d) devices="$2"; shift 2 ;;
    -p) port="$2"; shift 2 ;;
    --) shift; break ;;
    -h|--help) echo "$usage"; exit 0 ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
[[ $# -gt 0 ]] || { echo "$usage" >&2; exit 2; }
if [[ -z "$port" ]]; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
log_dir="${LOG_DIR:-$(mktemp -d)}"
mkdir -p "$log_dir"
echo "launch/local.sh: $num processes x $devices devices, coordinator 127.0.0.1:$port, logs in $log_dir"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup INT TERM

for ((i = 0; i < num; i++)); do
  XLA_FLAGS="--xla_force_host_platform_device_count=$devices ${XLA_FLAGS:-}" \
    "$@" \
    --config.distributed.num_processes="$num" \
    --config.distributed.process_id="$i" \
    --config.distributed.coordinator_address="127.0.0.1:$port" \
    >"$log_dir/process_$i.log" 2>&1 &
  pids+=($!)
done

status=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "launch/local.sh: process $i failed; see $log_dir/process_$i.log" >&2
    tail -n 20 "$log_dir/process_$i.log" >&2 || true
    status=1
    cleanup
  fi
done
exit $status
