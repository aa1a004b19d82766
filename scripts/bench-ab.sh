#!/usr/bin/env bash
# Two secrate binaries side by side on the live tree's hot paths, runs
# alternating: untar of the Linux tree's drivers/net (5.7k files) into a
# fresh mount, then `dd bs=1M conv=fsync` of 1 GiB of random data.
#
#   scripts/bench-ab.sh OLD_BINARY NEW_BINARY [RUNS]     (root; default 7)
#
# Each run makes a fresh repository and mount in $SECRATE_AB_DIR (default
# /var/tmp/secrate-ab: store and cache on the same disk) and drops the
# page cache before each step. The tarball is the one scripts/bench.sh
# --quick p1 prepares (its data directory, $SECRATE_BENCH_DIR).
set -euo pipefail
old=${1:?usage: scripts/bench-ab.sh OLD_BINARY NEW_BINARY [RUNS]}
new=${2:?usage: scripts/bench-ab.sh OLD_BINARY NEW_BINARY [RUNS]}
runs=${3:-7}
[[ "$(id -u)" == 0 ]] || { echo "bench-ab.sh: run as root (it drops the page cache)" >&2; exit 2; }
tar=${SECRATE_BENCH_DIR:-/var/tmp/secrate-bench}/data/p1-drivers-net.tar
[[ -f "$tar" ]] || { echo "bench-ab.sh: $tar is missing: run scripts/bench.sh --quick p1 first" >&2; exit 2; }
w=${SECRATE_AB_DIR:-/var/tmp/secrate-ab}
export SECRATE_PASSPHRASE=bench
now() { date +%s.%N; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
mkdir -p "$w"
head -c 1073741824 /dev/urandom > "$w.rand"
trap 'rm -f "$w.rand"' EXIT
for i in $(seq "$runs"); do
    for v in old new; do
        bin=$old; [[ $v == new ]] && bin=$new
        rm -rf "$w"; mkdir -p "$w/mnt"
        "$bin" --store "file://$w/store" init --kdf-work-factor 10 >/dev/null 2>&1
        "$bin" --store "file://$w/store" mount "$w/mnt" --cache "$w/cache" --snapshot-interval 0 >/dev/null
        drop; t0=$(now); tar xf "$tar" -C "$w/mnt"; t1=$(now)
        drop; t2=$(now); dd if="$w.rand" of="$w/mnt/big" bs=1M conv=fsync status=none; t3=$(now)
        "$bin" umount "$w/mnt" >/dev/null
        awk -v i="$i" -v v="$v" -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" \
            'BEGIN { printf "run %d %s untar %.2f s dd-write %.0f MB/s\n", i, v, b - a, 1073.741824 / (d - c) }'
    done
done
rm -rf "$w"
