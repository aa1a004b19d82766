#!/usr/bin/env bash
# Where the time of each FUSE request goes, per request type, while a
# command runs in a FUSE mount.
#
# Usage: scripts/fuse-latency.sh DIR COMMAND [ARG...]
#
# Runs COMMAND in DIR with the kernel's FUSE tracepoints and the serving
# threads' read/writev system calls traced (tracefs, root only), then prints
# for each request type its count and the mean of three spans:
#   queue  the request is sent -> a serving thread's read of /dev/fuse returns
#          it (waking a thread up: on a 2-vCPU VM mostly the wake-up of an
#          idle vCPU)
#   work   that read returns -> the thread starts writing the reply (what the
#          filesystem does)
#   reply  the reply is written -> the kernel ends the request
# Requests without a reply (FORGET) are not counted. The serving threads
# must be named fuser-N (fuser's names: secrate and the example filesystems).
# A request is matched to the read that returned as many bytes, first sent
# first; in a burst of equal-sized requests a few may pair wrongly, which
# moves time between spans of that type, not between types.
set -euo pipefail

die() { echo "fuse-latency: $*" >&2; exit 1; }
[[ $# -ge 2 ]] || die "usage: scripts/fuse-latency.sh DIR COMMAND [ARG...]"
dir=$1; shift
[[ -d $dir ]] || die "$dir is not a directory"
T=/sys/kernel/tracing
[[ -d $T/events/fuse ]] || T=/sys/kernel/debug/tracing
[[ -w $T/trace && -d $T/events/fuse ]] ||
    die "needs root and tracefs with the fuse events (mount -t tracefs nodev /sys/kernel/tracing)"

events=(fuse syscalls/sys_exit_read syscalls/sys_enter_writev)
out=$(mktemp)
old_size=$(cat $T/buffer_size_kb)
cleanup() {
    for e in "${events[@]}"; do echo 0 > "$T/events/$e/enable"; done
    echo 0 > $T/events/syscalls/sys_exit_read/filter
    echo 0 > $T/events/syscalls/sys_enter_writev/filter
    echo "$old_size" > $T/buffer_size_kb
    rm -f "$out"
}
trap cleanup EXIT
echo > $T/trace
echo 131072 > $T/buffer_size_kb
echo 'comm ~ "fuser*"' > $T/events/syscalls/sys_exit_read/filter
echo 'comm ~ "fuser*"' > $T/events/syscalls/sys_enter_writev/filter
for e in "${events[@]}"; do echo 1 > "$T/events/$e/enable"; done
t0=$(date +%s.%N)
rc=0
(cd "$dir" && "$@") || rc=$?
t1=$(date +%s.%N)
for e in "${events[@]}"; do echo 0 > "$T/events/$e/enable"; done
cp $T/trace "$out"
grep -q 'LOST.*EVENTS' "$out" && echo "fuse-latency: the trace buffer overflowed; counts are short" >&2
echo "$* took $(echo "$t1 - $t0" | bc) s (exit $rc)"
awk '
function hex(s,   i, c, v) {
    v = 0; s = tolower(s); sub(/^0x/, "", s)
    for (i = 1; i <= length(s); i++) { c = index("0123456789abcdef", substr(s, i, 1)); v = v * 16 + c - 1 }
    return v
}
{
    ts = ""; for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+\.[0-9]+:$/) { ts = substr($i, 1, length($i) - 1); ev = $(i + 1); break }
    if (ts == "") next
    tid = $1; sub(/.*-/, "", tid)
    if (ev == "fuse_request_send:") {
        for (j = i; j <= NF; j++) { if ($j == "req") r = $(j + 1); if ($j == "len") l = $(j + 1); if ($j ~ /^\(/) o = $j }
        gsub(/[()]/, "", o); sent[r] = ts; op[r] = o; plen[tail] = l; preq[tail] = r; tail++
    } else if (ev == "sys_read") {
        l = hex($(i + 3))
        while (head < tail && preq[head] == "") head++
        for (k = head; k < tail && k < head + 256; k++)
            if (preq[k] != "" && plen[k] == l) { cur[tid] = preq[k]; got[tid] = ts; preq[k] = ""; break }
    } else if (ev ~ /^sys_writev\(/) {
        if (tid in cur) { wr[cur[tid]] = ts; rd[cur[tid]] = got[tid]; delete cur[tid] }
    } else if (ev == "fuse_request_end:") {
        for (j = i; j <= NF; j++) if ($j == "req") r = $(j + 1)
        if ((r in wr) && (r in sent)) {
            o = op[r]; n[o]++; q[o] += rd[r] - sent[r]; w[o] += wr[r] - rd[r]; y[o] += ts - wr[r]
            delete wr[r]; delete rd[r]
        }
        delete sent[r]; delete op[r]
    }
}
END {
    printf "%-18s %8s %9s %9s %9s\n", "request", "count", "queue us", "work us", "reply us"
    for (o in n) printf "%-18s %8d %9.1f %9.1f %9.1f\n", o, n[o], q[o] / n[o] * 1e6, w[o] / n[o] * 1e6, y[o] / n[o] * 1e6
}' "$out" | { read -r h; echo "$h"; sort -k2,2nr; }
exit $rc
