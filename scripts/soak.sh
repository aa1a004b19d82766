#!/usr/bin/env bash
# The soak benchmark: one mount serving a steady workload for a long time,
# sampled every few seconds, to find what grows when nothing should: the
# daemon's memory, threads and open files, the cache (staged copies,
# outbox, redb), the log. The tree is kept at a steady size and retention
# keeps a fixed number of snapshots, so anything that keeps growing is the
# daemon's. The workload (scripts/lib/soak-work.py) checks every tenth
# operation's file against a model; at the end the mount is unmounted,
# mounted again on a fresh cache (from the store alone) and compared with
# the model in full.
#
#   scripts/soak.sh                       # 20 minutes on file://
#   scripts/soak.sh --minutes 60 --s3     # an hour on a local S3 server
#   scripts/soak.sh --rate 400 --interval 2 --seed 7
#
# Options: --minutes N (20), --rate OPS/S (200), --interval SECS between
# snapshots (2), --retention POLICY (last=30), --prune-interval SECS (the
# mount's own prune, 60), --cache-size SIZE (256M), --sample SECS (10),
# --seed N (random), --keep (leave the work dir).
# Needs root and /dev/fuse. Prints a table of samples and a summary of
# each measure's first and last quarter (medians) and its growth per hour
# over the second half (least squares); raw samples in WORK/samples.csv.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
# shellcheck source=scripts/lib/bench-common.sh
source "$ROOT/scripts/lib/bench-common.sh"

minutes=20
rate=200
interval=2
retention=last=30
prune_interval=60
cache_size=256M
sample=10
seed=$((RANDOM * 32768 + RANDOM))
s3=0
keep=0
while (($#)); do
    case "$1" in
    --minutes) minutes="$2"; shift ;;
    --rate) rate="$2"; shift ;;
    --interval) interval="$2"; shift ;;
    --retention) retention="$2"; shift ;;
    --prune-interval) prune_interval="$2"; shift ;;
    --cache-size) cache_size="$2"; shift ;;
    --sample) sample="$2"; shift ;;
    --seed) seed="$2"; shift ;;
    --s3) s3=1 ;;
    --keep) keep=1 ;;
    -h | --help)
        sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *) echo "soak.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
bench_require_root
[[ -w /dev/fuse ]] || bench_die "/dev/fuse is not writable"
bench_install_if_missing fusermount3 fuse3

cargo build --release --quiet
bin="$ROOT/target/release/secrate"
W="$(mktemp -d "${TMPDIR:-/tmp}/secrate-soak.XXXXXX")"
mnt="$W/mnt"
cache="$W/cache"
mkdir -p "$mnt"
export SECRATE_PASSPHRASE="soak-$seed"
work_pid=""

# Bytes on disk under $1; files vanishing while du runs are no error.
dir_bytes() { { du -sb "$1" 2>/dev/null || true; } | awk '{print $1 + 0}'; }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [[ -n "$work_pid" ]] && kill "$work_pid" 2>/dev/null || true
    if mountpoint -q "$mnt"; then
        "$bin" umount "$mnt" >/dev/null 2>&1 || fusermount3 -uz "$mnt" || true
    fi
    ((s3)) && { s3_server_stop || true; }
    if ((keep)) || ((rc != 0)); then
        bench_log "work dir kept: $W"
    else
        rm -rf "$W"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ((s3)); then
    export SECRATE_TOOLS="${SECRATE_TOOLS:-$HOME/.cache/secrate-tools}"
    export S3_TOOLS="$SECRATE_TOOLS"
    # shellcheck source=scripts/lib/s3-server.sh
    source "$ROOT/scripts/lib/s3-server.sh"
    s3_server_install
    s3_server_start "$W"
    store="$SECRATE_TEST_S3_URL/soak"
    store_dir() { echo "$S3_SERVER_ROOT/$S3_BUCKET/soak"; }
else
    store="file://$W/store"
    store_dir() { echo "$W/store"; }
fi

bench_log "seed $seed, $minutes min at $rate ops/s, a snapshot every ${interval}s, retention $retention, a prune at most every ${prune_interval}s, cache $cache_size, store $store"
"$bin" --store "$store" init --kdf-work-factor 12 -q >/dev/null
"$bin" mount "$mnt" --store "$store" --cache "$cache" --snapshot-interval "$interval" \
    --retention "$retention" --prune-interval "$prune_interval" --cache-size "$cache_size" -q
daemon="$(pgrep -n -f "mount $mnt .*--daemon-child")" || bench_die "no daemon process for $mnt"

python3 "$ROOT/scripts/lib/soak-work.py" run "$mnt" "$((minutes * 60))" "$seed" "$rate" \
    "$W/model.json" "$W/ops" >"$W/work.log" 2>&1 &
work_pid=$!

csv="$W/samples.csv"
echo "secs,ops,anon_kib,file_kib,threads,fds,cache_bytes,redb_bytes,log_bytes,staged_files,snapshots,store_bytes" >"$csv"
start=$SECONDS
printf '%6s %9s %9s %9s %7s %5s %11s %11s %9s %7s %6s %12s\n' secs ops anon_kib file_kib threads fds cache redb log staged snaps store >&2
while kill -0 "$work_pid" 2>/dev/null; do
    sleep "$sample"
    kill -0 "$daemon" 2>/dev/null || bench_die "the daemon died (see $cache/mount.log)"
    secs=$((SECONDS - start))
    ops="$(cat "$W/ops" 2>/dev/null || echo 0)"
    anon="$(awk '/^RssAnon:/ {print $2}' "/proc/$daemon/status")"
    file="$(awk '/^RssFile:/ {print $2}' "/proc/$daemon/status")"
    threads="$(awk '/^Threads:/ {print $2}' "/proc/$daemon/status")"
    fds="$({ find "/proc/$daemon/fd" -mindepth 1 -maxdepth 1 2>/dev/null || true; } | wc -l)"
    cache_b="$(dir_bytes "$cache")"
    redb_b="$(find "$cache" -name '*.redb' -printf '%s\n' 2>/dev/null | awk '{s += $1} END {print s + 0}')"
    log_b="$(find "$cache" -maxdepth 1 -name 'mount.log*' -printf '%s\n' | awk '{s += $1} END {print s + 0}')"
    staged="$({ find "$cache/staged" -type f 2>/dev/null || true; } | wc -l)"
    snaps="$({ find "$mnt/.history" -mindepth 1 -maxdepth 1 2>/dev/null || true; } | wc -l)"
    store_b="$(dir_bytes "$(store_dir)")"
    echo "$secs,$ops,$anon,$file,$threads,$fds,$cache_b,$redb_b,$log_b,$staged,$snaps,$store_b" >>"$csv"
    printf '%6s %9s %9s %9s %7s %5s %11s %11s %9s %7s %6s %12s\n' \
        "$secs" "$ops" "$anon" "$file" "$threads" "$fds" "$cache_b" "$redb_b" "$log_b" "$staged" "$snaps" "$store_b" >&2
done
wait "$work_pid" || { cat "$W/work.log" >&2; bench_die "the workload failed"; }
work_pid=""
cat "$W/work.log" >&2

bench_log "the cache at the end, by directory:"
{ du -sb "$cache"/* 2>/dev/null || true; } | sort -n | sed "s|$cache/||" >&2
bench_log "unmount (seal, upload), then mount again on a fresh cache and compare"
umount_start=$SECONDS
"$bin" umount "$mnt" -q
umount_secs=$((SECONDS - umount_start))
python3 - "$csv" "$umount_secs" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
if len(rows) < 8:
    sys.exit("soak: too few samples for a summary (run longer)")
q = len(rows) // 4
half = rows[len(rows) // 2:]
def slope(col):
    xs = [float(r["secs"]) for r in half]
    ys = [float(r[col]) for r in half]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return 0.0 if den == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den * 3600
ops = float(rows[-1]["ops"]) / float(rows[-1]["secs"])
print(f"\n| measure | first quarter (median) | last quarter (median) | growth per hour, second half |")
print("|---|---|---|---|")
for col in ["anon_kib", "file_kib", "threads", "fds", "cache_bytes", "redb_bytes", "log_bytes", "staged_files", "snapshots", "store_bytes"]:
    a = statistics.median(float(r[col]) for r in rows[:q])
    b = statistics.median(float(r[col]) for r in rows[-q:])
    print(f"| {col} | {a:.0f} | {b:.0f} | {slope(col):+.0f} |")
print(f"\n{rows[-1]['ops']} operations in {rows[-1]['secs']} s ({ops:.0f}/s); `secrate umount` took {sys.argv[2]} s")
PY
bench_log "the mount's prunes: $(grep -c ' prune: ' "$cache/mount.log" || true) (last: $(grep ' prune: ' "$cache/mount.log" | tail -1 | cut -c22-))"
if grep -q 'warning: prune' "$cache/mount.log"; then
    grep 'warning: prune' "$cache/mount.log" | tail -3 >&2
    bench_die "a prune failed (see $cache/mount.log)"
fi
if ((keep)); then mv "$cache" "$W/cache.used"; else rm -rf "$cache"; fi
"$bin" mount "$mnt" --store "$store" --cache "$W/cache2" --snapshot-interval 0 -q
python3 "$ROOT/scripts/lib/soak-work.py" verify "$mnt" "$W/model.json"
"$bin" umount "$mnt" -q
bench_log "check --read-data of the store"
"$bin" check --store "$store" --read-data -q || bench_die "check found damage in the store"
bench_log "done: every name, byte, xattr and hard link of the model came back from the store"
