# shellcheck shell=bash
# Shared helpers for the benchmark scripts (scripts/bench-*.sh).
#
# Source this file from a script running under `set -euo pipefail`, then:
#
#   bench_log MSG...                 # "[bench hh:mm:ss] MSG" on stderr
#   bench_die MSG...                 # log and exit 1
#   bench_require_root               # exit unless running as root
#   bench_install_if_missing CMD PKG # apt-get install PKG unless CMD exists
#   bench_drop_caches                # sync; echo 3 > drop_caches; 0 if it worked
#   bench_time LABEL CMD [ARGS...]   # run CMD under /usr/bin/time, see below
#   bench_median N...                # the median (mean of the middle two if even)
#   bench_cpu_jiffies                # busy CPU time of the whole machine so far,
#                                    # in clock ticks (/proc/stat)
#   bench_busy_pct [SECONDS]         # how busy the machine is (0-100, all cores)
#   bench_wait_idle MAX_BUSY MAX_WAIT
#                                    # wait until bench_busy_pct <= MAX_BUSY
#                                    # (e.g. a compile running beside us has
#                                    # ended), at most MAX_WAIT seconds; sets
#                                    # BENCH_BUSY_PCT to the last sample;
#                                    # each sample lasts BENCH_BUSY_SAMPLE
#                                    # seconds (default 2)
#   bench_min N... / bench_max N...
#   bench_div A B [FMT]              # A / B with awk, "n/a" when B is 0 or empty
#   bench_dir_bytes DIR              # du -sb DIR (bytes on disk, 4 KiB blocks)
#   bench_file_bytes DIR             # sum of the regular files' sizes in DIR
#   bench_file_count DIR             # number of regular files in DIR
#   bench_machine_info [DIR]         # Markdown-ish "key: value" lines about
#                                    # the machine and the disk holding DIR
#   bench_tool_version CMD           # first line of CMD's version output
#
# bench_time runs the command with its stdout and stderr appended to
# $BENCH_LOG (default /dev/null) and sets, for the caller:
#
#   BENCH_RC      the command's exit code (bench_time itself returns 0)
#   BENCH_WALL    wall clock, seconds (date +%s.%N around the command)
#   BENCH_USER    user CPU seconds   \  from /usr/bin/time, children
#   BENCH_SYS     system CPU seconds /   included
#   BENCH_CPU_PCT (user+sys)/wall in percent: ~100 on one busy core,
#                 ~100*cores when every core is busy
#   BENCH_RSS_KB  peak resident set size, KiB (/usr/bin/time %M)
#   BENCH_OTHER_CPU_PCT  CPU used by everything else on the machine during
#                 the command, percent of one core (the machine's busy time
#                 from /proc/stat minus the command's user+sys): the noise
#                 from neighbours, e.g. a compile on a shared machine, but
#                 also kernel threads working for the command (writeback,
#                 kswapd), which no process is charged for
#
# Nothing here is specific to secrate; put tool-specific steps in the script.

BENCH_LOG="${BENCH_LOG:-/dev/null}"

bench_log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

bench_die() {
    bench_log "error: $*"
    exit 1
}

bench_require_root() {
    [[ "$(id -u)" == 0 ]] || bench_die "run as root (dropping page caches and apt-get need it)"
}

_bench_apt_updated=0
bench_install_if_missing() {
    local cmd="$1" pkg="$2"
    if command -v "$cmd" >/dev/null 2>&1; then
        return 0
    fi
    bench_log "installing $pkg (for $cmd)"
    if ((_bench_apt_updated == 0)); then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || return 1
        _bench_apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >&2 || return 1
    command -v "$cmd" >/dev/null 2>&1
}

# Same as above for a package that ships a file rather than a command.
bench_install_pkg_for_file() {
    local file="$1" pkg="$2"
    [[ -e "$file" ]] && return 0
    bench_log "installing $pkg (for $file)"
    if ((_bench_apt_updated == 0)); then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || return 1
        _bench_apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >&2 || return 1
    [[ -e "$file" ]]
}

bench_drop_caches() {
    sync
    if { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
        return 0
    fi
    bench_log "warning: could not drop page caches (not root, or not allowed here)"
    return 1
}

bench_time() {
    local label="$1"
    shift
    local tf t0 t1 j0 j1
    tf="$(mktemp)"
    {
        echo "=== $label: $*"
    } >>"$BENCH_LOG"
    j0="$(bench_cpu_jiffies)"
    t0="$(date +%s.%N)"
    set +e
    /usr/bin/time -o "$tf" -f '%U %S %M' "$@" >>"$BENCH_LOG" 2>&1
    BENCH_RC=$?
    set -e
    t1="$(date +%s.%N)"
    j1="$(bench_cpu_jiffies)"
    # /usr/bin/time writes "Command exited with non-zero status N" first
    # when the command fails; the figures are on the last line.
    read -r BENCH_USER BENCH_SYS BENCH_RSS_KB < <(tail -n 1 "$tf")
    rm -f "$tf"
    BENCH_WALL="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')"
    BENCH_CPU_PCT="$(awk -v u="$BENCH_USER" -v s="$BENCH_SYS" -v w="$BENCH_WALL" \
        'BEGIN { if (w > 0) printf "%.0f", 100 * (u + s) / w; else print "n/a" }')"
    BENCH_OTHER_CPU_PCT="$(awk -v j0="$j0" -v j1="$j1" -v hz="$_bench_hz" -v u="$BENCH_USER" -v s="$BENCH_SYS" -v w="$BENCH_WALL" \
        'BEGIN { o = (j1 - j0) / hz - u - s; if (o < 0) o = 0; if (w > 0) printf "%.0f", 100 * o / w; else print "n/a" }')"
    echo "=== $label: rc=$BENCH_RC wall=${BENCH_WALL}s user=${BENCH_USER}s sys=${BENCH_SYS}s cpu=${BENCH_CPU_PCT}% rss=${BENCH_RSS_KB}KiB others=${BENCH_OTHER_CPU_PCT}%" >>"$BENCH_LOG"
    return 0
}

_bench_hz="$(getconf CLK_TCK 2>/dev/null || echo 100)"

# user + nice + system + irq + softirq + steal of the "cpu" line (guest time
# is already inside user); idle and iowait are not busy.
bench_cpu_jiffies() { awk '$1 == "cpu" { printf "%.0f\n", $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }

_bench_total_jiffies() { awk '$1 == "cpu" { printf "%.0f\n", $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9; exit }' /proc/stat; }

bench_busy_pct() {
    local b0 t0 b1 t1
    b0="$(bench_cpu_jiffies)"
    t0="$(_bench_total_jiffies)"
    sleep "${1:-2}"
    b1="$(bench_cpu_jiffies)"
    t1="$(_bench_total_jiffies)"
    awk -v b="$((b1 - b0))" -v t="$((t1 - t0))" 'BEGIN { if (t > 0) printf "%.0f\n", 100 * b / t; else print 0 }'
}

bench_wait_idle() {
    local max_busy="$1" max_wait="$2" waited=0
    BENCH_BUSY_PCT="$(bench_busy_pct "${BENCH_BUSY_SAMPLE:-2}")"
    while ((BENCH_BUSY_PCT > max_busy)); do
        if ((waited >= max_wait)); then
            bench_log "warning: machine still ${BENCH_BUSY_PCT}% busy after ${waited}s; measuring anyway"
            return 0
        fi
        ((waited == 0)) && bench_log "machine ${BENCH_BUSY_PCT}% busy (other processes); waiting up to ${max_wait}s for it to settle"
        sleep 3
        waited=$((waited + 5))
        BENCH_BUSY_PCT="$(bench_busy_pct "${BENCH_BUSY_SAMPLE:-2}")"
    done
    ((waited == 0)) || bench_log "machine ${BENCH_BUSY_PCT}% busy after ${waited}s of waiting"
    return 0
}

bench_median() {
    (($#)) || {
        echo "n/a"
        return 0
    }
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { if (NR % 2) m = v[(NR + 1) / 2]; else m = (v[NR / 2] + v[NR / 2 + 1]) / 2
              printf "%.15g\n", m }'
}

bench_min() { printf '%s\n' "$@" | sort -g | head -n 1; }
bench_max() { printf '%s\n' "$@" | sort -g | tail -n 1; }

bench_div() {
    local a="$1" b="$2" fmt="${3:-%.2f}"
    awk -v a="$a" -v b="$b" -v f="$fmt" \
        'BEGIN { if (a == "" || b == "" || a == "n/a" || b == "n/a" || b + 0 == 0) print "n/a"; else printf f "\n", a / b }'
}

bench_dir_bytes() { du -sb "$1" | awk '{ print $1 }'; }

# %.0f, not %d: mawk's %d stops at 2^31 - 1.
bench_file_bytes() { find "$1" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f\n", s }'; }

bench_file_count() { find "$1" -type f | wc -l; }

bench_tool_version() { "$@" 2>&1 | head -n 1; }

bench_machine_info() {
    local dir="${1:-.}" dev src fstype model rota size
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "cpu: $(nproc) cores ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo))"
    echo "memory: $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "kernel: $(uname -r) ($(uname -m))"
    echo "os: $(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-unknown}")"
    src="$(df --output=source "$dir" 2>/dev/null | tail -n 1)"
    fstype="$(df --output=fstype "$dir" 2>/dev/null | tail -n 1)"
    size="$(df -h --output=size "$dir" 2>/dev/null | tail -n 1 | tr -d ' ')"
    dev="$(basename "$src")"
    model="$(cat "/sys/block/$dev/device/model" 2>/dev/null || true)"
    rota="$(cat "/sys/block/$dev/queue/rotational" 2>/dev/null || true)"
    case "$rota" in
    0) rota="non-rotational" ;;
    1) rota="rotational" ;;
    *) rota="rotational: unknown" ;;
    esac
    echo "disk: $src ($fstype, $size, ${model:+$model, }$rota; virtual disk: $(
        [[ "$dev" == vd* || "$dev" == xvd* ]] && echo yes || echo unknown
    )) holding $dir"
}
