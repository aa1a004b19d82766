#!/usr/bin/env bash
# A read-only mount's live tree switch (docs/benchmarks.md, "Stop 28" and
# "A switch by what changed"): a file:// repository of 100,000 small files
# in 400 directories, mounted --read-only --snapshot-interval 2; then three
# backups from outside, each changing one file, 4 s apart, while `ls -l`
# of a 250-file directory runs in a loop (every 10 ms). Prints each
# switch as mount.log gives it, and the `ls -l` times.
#
# Usage (as root, FUSE): scripts/bench-switch.sh BINARY [FILES_PER_DIR]
set -euo pipefail
BIN=$(realpath "$1")
PER_DIR=${2:-250}
W=$(mktemp -d /tmp/bench-switch.XXXXXX)
export SECRATE_PASSPHRASE=bench SECRATE_STORE="file://$W/store"
unset SECRATE_RECOVERY_KEY
python3 - "$W/src" "$PER_DIR" <<'PY'
import os, sys
root, per = sys.argv[1], int(sys.argv[2])
for d in range(400):
    p = os.path.join(root, "d%04d" % d)
    os.makedirs(p)
    for f in range(per):
        with open(os.path.join(p, "f%04d" % f), "w") as o:
            o.write("file %d of directory %d\n" % (f, d))
PY
"$BIN" init --kdf-work-factor 10 >/dev/null
s=$(date +%s%N); "$BIN" backup -q "$W/src"; e=$(date +%s%N)
echo "backup: $(( (e - s) / 1000000 )) ms"
mkdir "$W/mnt"
"$BIN" mount "$W/mnt" --cache "$W/cache" --read-only --snapshot-interval 2
trap '"$BIN" umount "$W/mnt" || true; rm -rf "$W"' EXIT
(
    while [ ! -e "$W/stop" ]; do
        s=$(date +%s%N)
        ls -l "$W/mnt/d0200" >/dev/null
        e=$(date +%s%N)
        echo $(( (e - s) / 1000 )) >>"$W/ls.us"
        sleep 0.01
    done
) &
sleep 3
for i in 1 2 3; do
    echo "changed $i" >"$W/src/d0100/f0100"
    "$BIN" backup -q "$W/src"
    sleep 4
done
# The last switch may wait for the pacing (20 × the one before).
for _ in $(seq 30); do
    [ "$(grep -c 'live tree is now' "$W/cache/mount.log")" -ge 4 ] && break
    sleep 1
done
sleep 1
touch "$W/stop"
wait
grep 'live tree is now' "$W/cache/mount.log"
sort -n "$W/ls.us" | awk '{ a[NR] = $1 } END {
    printf "ls -l: %d runs, median %.1f ms, 99th %.1f ms, max %.1f ms\n",
        NR, a[int((NR + 1) / 2)] / 1000, a[int(NR * 0.99)] / 1000, a[NR] / 1000 }'
echo "slowest ls -l (ms): $(sort -n "$W/ls.us" | tail -5 | awk '{ printf "%.1f ", $1 / 1000 }')"
echo "mount RSS: $(ps -o rss= -p "$(cat "$W/cache/lock")") KiB"
