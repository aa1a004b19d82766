#!/usr/bin/env bash
# The long fsx run: mount-tests/fsx.rs with 1M operations per seed (CI runs
# 100k). Prints each seed; a failure prints the seed, the operations before
# it and the command that replays it.
#
#   scripts/fsx.sh                     # 1M ops, one random seed
#   scripts/fsx.sh -n 3                # three runs, random seeds
#   scripts/fsx.sh --ops 200000 0x1234 0xbeef    # given seeds
#   scripts/fsx.sh --evict             # with --cache-size 1M: clean copies
#                                      # evicted after every upload
#
# Environment: SECRATE_FSX_SNAPSHOT_EVERY (default ops/20). Needs root
# and /dev/fuse. Logs go to target/fsx/<seed>.log.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ops=1000000
runs=1
seeds=()
test=fsx_random_ops_and_snapshots
while (($#)); do
    case "$1" in
    --ops)
        ops="$2"
        shift
        ;;
    -n)
        runs="$2"
        shift
        ;;
    --evict) test=fsx_with_clean_copies_evicted ;;
    -h | --help)
        sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *) seeds+=("$1") ;;
    esac
    shift
done
if ((${#seeds[@]} == 0)); then
    for _ in $(seq 1 "$runs"); do
        seeds+=("0x$(od -An -tx8 -N8 /dev/urandom | tr -d ' \n')")
    done
fi

# Build once and run that binary: the tree may change during a long run.
bin="$(cargo test --test fsx --no-run 2>&1 | tee /dev/stderr |
    sed -n 's/^ *Executable .*(\(.*\))$/\1/p' | tail -1)"
[[ -x "$bin" ]] || {
    echo "fsx.sh: cannot find the fsx test binary" >&2
    exit 2
}
mkdir -p target/fsx
failed=0
for seed in "${seeds[@]}"; do
    log="target/fsx/$seed.log"
    echo "fsx: seed $seed, $ops ops (log $log)"
    start=$SECONDS
    if SECRATE_FSX_SEED="$seed" SECRATE_FSX_OPS="$ops" \
        "$bin" "$test" --exact --nocapture >"$log" 2>&1; then
        echo "  ok in $((SECONDS - start)) s: $(grep -E '^fsx: [0-9]+ ops in' "$log" | cut -c1-80)"
    else
        failed=$((failed + 1))
        echo "  FAILED after $((SECONDS - start)) s; the end of $log:"
        tail -60 "$log" | sed 's/^/  | /'
    fi
done
echo "fsx: ${#seeds[@]} runs, $failed failed"
((failed == 0))
