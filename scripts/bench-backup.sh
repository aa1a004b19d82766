#!/usr/bin/env bash
# Benchmarks `secrate backup` against `restic backup` and `borg create` on the same data, into
# local repositories on the same disk as the data.
#
#   scripts/bench-backup.sh [--runs N] [--quick] [--workdir DIR] [--out DIR]
#                           [--secrate BIN] [--no-verify] [--sets LIST]
#                           [--max-busy PCT] [--idle-wait SECONDS]
#                           [--max-others PCT] [--attempts N] [--tools LIST]
#
#   --runs N       measured rounds per data set (default 3; 1 with --quick)
#   --quick        small data: 512 MiB random + a subset of the Linux tree
#   --workdir DIR  data, repositories and results (default
#                  $SECRATE_BENCH_DIR or /var/tmp/secrate-bench)
#   --out DIR      where results go (default WORKDIR/results)
#   --secrate BIN  use this binary instead of building target/release/secrate
#   --no-verify    skip the untimed `secrate check --read-data` after round 1
#   --sets LIST    comma-separated data sets: random,source (default both)
#   --tools LIST   comma-separated tools: secrate,restic,restic-nocomp,borg
#                  (default all four)
#   --max-busy PCT, --idle-wait SECONDS
#                  before each measurement, wait until the machine is at
#                  most PCT% busy (default 15; all cores = 100) for at most
#                  SECONDS (default 900): on a shared machine a compile
#                  beside the benchmark halves the CPU it gets. The CPU the
#                  neighbours used during each timed run is recorded anyway.
#   --max-others PCT, --attempts N
#                  a measurement during which other processes used more
#                  than PCT% of one core (default 25) is discarded (kept in
#                  the CSV with kept=no) and taken again, up to N attempts
#                  in all (default 3); the last one is kept whatever it saw.
#
# Data sets, generated once into WORKDIR/data and reused:
#   random  4 x 512 MiB from /dev/urandom (2 GiB; --quick: 1 x 512 MiB):
#           incompressible, no duplicates
#   source  the Linux 6.1 source tree from Debian's linux-source-6.1
#           (~1.3 GB, ~79k files; --quick: its drivers/net subtree)
#
# For each round, data set and tool (secrate; restic with --compression
# auto, restic's default; restic with --compression off; borg 1.2 with
# --compression lz4, its default, repokey-blake2 encryption) in that order,
# alternating: a fresh repository, page caches dropped, a timed first
# backup, the store's size (du -sb), then a timed second backup of the
# unchanged data (page cache warm from the first). Wall clock, user/sys CPU
# and peak RSS come from /usr/bin/time. The KDF is made cheap on both
# sides' unlock paths where possible (secrate init --kdf-work-factor 10;
# restic calibrates its scrypt at init: ~0.4 s of CPU per command here,
# inside its timings; 0.14 has no flag to lower it).
#
# Writes OUT/bench-backup-STAMP.csv (one row per timed backup, with the
# time of a `sync` run right after it, outside the timing),
# OUT/bench-backup-STAMP.md (machine, versions, medians, min-max, ratios)
# and OUT/bench-backup-STAMP.log (every command's output), then prints the
# Markdown. Needs root (drop_caches, apt-get); installs restic, borgbackup
# and linux-source-6.1 with apt if they are missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
# shellcheck source=scripts/lib/bench-common.sh
. "$ROOT/scripts/lib/bench-common.sh"

runs=""
quick=0
workdir="${SECRATE_BENCH_DIR:-/var/tmp/secrate-bench}"
outdir=""
secrate_bin=""
verify=1
sets="random,source"
max_busy=15
idle_wait=900
max_others=25
max_attempts=3
tools_arg="secrate,restic,restic-nocomp,borg"
while (($#)); do
    case "$1" in
    --runs)
        runs="$2"
        shift
        ;;
    --quick) quick=1 ;;
    --workdir)
        workdir="$2"
        shift
        ;;
    --out)
        outdir="$2"
        shift
        ;;
    --secrate)
        secrate_bin="$2"
        shift
        ;;
    --no-verify) verify=0 ;;
    --max-busy)
        max_busy="$2"
        shift
        ;;
    --idle-wait)
        idle_wait="$2"
        shift
        ;;
    --max-others)
        max_others="$2"
        shift
        ;;
    --attempts)
        max_attempts="$2"
        shift
        ;;
    --sets)
        sets="$2"
        shift
        ;;
    --tools)
        tools_arg="$2"
        shift
        ;;
    -h | --help)
        awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
        exit 0
        ;;
    *) bench_die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done
if [[ -z "$runs" ]]; then
    runs=$((quick ? 1 : 3))
fi
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || bench_die "--runs wants a positive integer, not $runs"

bench_require_root
mkdir -p "$workdir"
workdir="$(cd "$workdir" && pwd)"
outdir="${outdir:-$workdir/results}"
mkdir -p "$outdir" "$workdir/data" "$workdir/bin"
outdir="$(cd "$outdir" && pwd)"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
((quick)) && stamp="$stamp-quick"
csv="$outdir/bench-backup-$stamp.csv"
md="$outdir/bench-backup-$stamp.md"
export BENCH_LOG="$outdir/bench-backup-$stamp.log"
: >"$BENCH_LOG"
bench_log "log: $BENCH_LOG"

# ---------------------------------------------------------------- tools
bench_install_if_missing restic restic || bench_die "cannot install restic"
[[ ",$tools_arg," != *,borg,* ]] || bench_install_if_missing borg borgbackup || bench_die "cannot install borgbackup"
[[ -x /usr/bin/time ]] || bench_install_if_missing /usr/bin/time time || bench_die "cannot install time"

# A private copy of the binary: other people rebuild target/ while this runs.
if [[ -z "$secrate_bin" ]]; then
    bench_log "building secrate (cargo build --release)"
    cargo build --release --quiet >>"$BENCH_LOG" 2>&1 || bench_die "cargo build --release failed (see $BENCH_LOG)"
    secrate_bin="$ROOT/target/release/secrate"
    secrate_rev="$(git -C "$ROOT" describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)"
    # Others may be editing the tree: say what the build had beyond the commit.
    dirty="$(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | wc -l)"
    if ((dirty)); then
        secrate_rev+=", $dirty uncommitted file(s) in src/Cargo.*, listed in the log"
        {
            echo "=== uncommitted changes in the secrate build:"
            git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock
            git -C "$ROOT" diff --stat -- src Cargo.toml Cargo.lock
        } >>"$BENCH_LOG"
    fi
else
    secrate_rev="given binary $secrate_bin"
fi
cp "$secrate_bin" "$workdir/bin/secrate"
SECRATE="$workdir/bin/secrate"
secrate_version="$(bench_tool_version "$SECRATE" --version) ($secrate_rev; binary sha256 $(sha256sum "$SECRATE" | cut -c1-12))"
restic_version="$(bench_tool_version restic version)"
borg_version="$(bench_tool_version borg --version 2>/dev/null || echo none)"

# ---------------------------------------------------------------- data
gen_random() {
    local n="$1" dir="$workdir/data/random-${1}x512M" i
    if [[ ! -e "$dir.complete" ]]; then
        bench_log "generating $n x 512 MiB of random data in $dir"
        rm -rf "$dir"
        mkdir -p "$dir"
        for ((i = 0; i < n; i++)); do
            head -c 512M /dev/urandom >"$dir/random-$i.bin"
        done
        sync
        touch "$dir.complete"
    fi
    echo "$dir"
}

gen_source() {
    local tarball=/usr/src/linux-source-6.1.tar.xz dir member
    if ((quick)); then
        dir="$workdir/data/linux-6.1-drivers-net"
        member="linux-source-6.1/drivers/net"
    else
        dir="$workdir/data/linux-6.1"
        member="linux-source-6.1"
    fi
    if [[ ! -e "$dir.complete" ]]; then
        bench_install_pkg_for_file "$tarball" linux-source-6.1 ||
            bench_die "linux-source-6.1 is not available: pass --sets random, or adapt gen_source to another real source tree"
        bench_log "extracting $member from $tarball into $dir"
        rm -rf "$dir"
        mkdir -p "$dir"
        tar -xJf "$tarball" -C "$dir" "$member"
        sync
        touch "$dir.complete"
    fi
    echo "$dir/$member"
}

declare -A set_path set_bytes set_files set_desc
IFS=, read -r -a set_list <<<"$sets"
for s in "${set_list[@]}"; do
    case "$s" in
    random)
        set_path[$s]="$(gen_random $((quick ? 1 : 4)))"
        set_desc[$s]="random data, $((quick ? 1 : 4)) x 512 MiB from /dev/urandom"
        ;;
    source)
        set_path[$s]="$(gen_source)"
        set_desc[$s]="Linux 6.1 source ($( ((quick)) && echo "drivers/net subtree" || echo "whole tree"), Debian linux-source-6.1)"
        ;;
    *) bench_die "unknown data set $s (known: random, source)" ;;
    esac
    set_bytes[$s]="$(bench_file_bytes "${set_path[$s]}")"
    set_files[$s]="$(bench_file_count "${set_path[$s]}")"
    bench_log "data set $s: ${set_path[$s]}: ${set_files[$s]} files, ${set_bytes[$s]} bytes"
done

# ---------------------------------------------------------------- tools under test
IFS=, read -r -a tools <<<"$tools_arg"
declare -A tool_desc=(
    [secrate]="secrate backup (its own defaults)"
    [restic]="restic backup --compression auto (restic 0.14's default)"
    [restic-nocomp]="restic backup --compression off"
    [borg]="borg create --compression lz4 (borg 1.2's default), repokey-blake2"
)
for tool in "${tools[@]}"; do
    [[ -n "${tool_desc[$tool]:-}" ]] || bench_die "unknown tool $tool (known: ${!tool_desc[*]})"
done

repo="$workdir/repo"
restic_cache="$workdir/restic-cache"
export SECRATE_PASSPHRASE="bench-backup-passphrase"
export RESTIC_PASSWORD="bench-backup-passphrase"
export BORG_PASSPHRASE="bench-backup-passphrase"
export BORG_BASE_DIR="$workdir/borg-base"
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes

fresh_repo() {
    local tool="$1"
    rm -rf "$repo" "$restic_cache" "$BORG_BASE_DIR"
    case "$tool" in
    secrate)
        SECRATE_STORE="file://$repo" "$SECRATE" init --kdf-work-factor 10 >>"$BENCH_LOG" 2>&1 ||
            bench_die "secrate init failed (see $BENCH_LOG)"
        ;;
    restic*)
        restic init --repo "$repo" --cache-dir "$restic_cache" >>"$BENCH_LOG" 2>&1 ||
            bench_die "restic init failed (see $BENCH_LOG)"
        ;;
    borg)
        borg init --encryption repokey-blake2 "$repo" >>"$BENCH_LOG" 2>&1 ||
            bench_die "borg init failed (see $BENCH_LOG)"
        ;;
    esac
}

# Sets the array cmd to TOOL's backup command for PATH (PHASE names borg's
# archive).
backup_cmd() {
    local tool="$1" path="$2" phase="${3:-first}"
    case "$tool" in
    secrate) cmd=(env "SECRATE_STORE=file://$repo" "$SECRATE" backup -q "$path") ;;
    restic) cmd=(restic backup -q --repo "$repo" --cache-dir "$restic_cache" --compression auto "$path") ;;
    restic-nocomp) cmd=(restic backup -q --repo "$repo" --cache-dir "$restic_cache" --compression off "$path") ;;
    borg) cmd=(borg create --compression lz4 "$repo::$phase" "$path") ;;
    esac
}

echo "dataset,tool,run,phase,attempt,wall_s,user_s,sys_s,cpu_pct,peak_rss_kib,store_bytes,data_bytes,data_files,mb_per_s,caches_dropped,sync_after_s,busy_before_pct,others_cpu_pct,kept,rc" >"$csv"

# One measurement: fresh repository, drop caches, timed first and second
# backup. Appends its two CSV lines to the array rows and sets noisy=1 when
# neighbours took more than max_others% of a core during a backup that ran
# for at least a second (shorter ones are within /proc/stat's 10 ms ticks).
measure() {
    local s="$1" tool="$2" run="$3" attempt="$4" phase dropped=yes t0 sync_s store mbps
    rows=()
    noisy=0
    bench_wait_idle "$max_busy" "$idle_wait"
    fresh_repo "$tool"
    bench_drop_caches || {
        dropped=no
        caches_note="no"
    }
    for phase in first second; do
        backup_cmd "$tool" "${set_path[$s]}" "$phase"
        bench_time "$s/$tool/run$run/attempt$attempt/$phase" "${cmd[@]}"
        if [[ "$BENCH_RC" != 0 ]]; then
            bench_log "FAILED: $s $tool run $run $phase exited $BENCH_RC (see $BENCH_LOG)"
            failures+=("$s $tool run $run $phase: exit $BENCH_RC")
        fi
        # Both tools fsync what they write; a sync right after shows
        # whether anything was still left dirty in the page cache.
        t0="$(date +%s.%N)"
        sync
        sync_s="$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')"
        store="$(bench_dir_bytes "$repo")"
        mbps="$(bench_div "${set_bytes[$s]}" "$(awk -v w="$BENCH_WALL" 'BEGIN { print w * 1e6 }')" '%.1f')"
        rows+=("$s,$tool,$run,$phase,$attempt,$BENCH_WALL,$BENCH_USER,$BENCH_SYS,$BENCH_CPU_PCT,$BENCH_RSS_KB,$store,${set_bytes[$s]},${set_files[$s]},$mbps,$([[ $phase == first ]] && echo "$dropped" || echo "no (warm)"),$sync_s,$BENCH_BUSY_PCT,$BENCH_OTHER_CPU_PCT,KEPT,$BENCH_RC")
        bench_log "$s run $run $tool $phase: ${BENCH_WALL}s, ${mbps} MB/s, cpu ${BENCH_CPU_PCT}%, rss $((BENCH_RSS_KB / 1024)) MiB, store $store bytes, sync after ${sync_s}s, others ${BENCH_OTHER_CPU_PCT}%"
        if awk -v w="$BENCH_WALL" -v o="$BENCH_OTHER_CPU_PCT" -v m="$max_others" 'BEGIN { exit !(w >= 1 && o > m) }'; then
            noisy=1
        fi
    done
}

caches_note="yes"
failures=()
noisy_kept=()
for ((run = 1; run <= runs; run++)); do
    for s in "${set_list[@]}"; do
        for tool in "${tools[@]}"; do
            for ((attempt = 1; ; attempt++)); do
                measure "$s" "$tool" "$run" "$attempt"
                if ((noisy && attempt < max_attempts)); then
                    bench_log "other processes took more than ${max_others}% of a core during that measurement: discarded, measuring again"
                    printf '%s\n' "${rows[@]}" | sed 's/,KEPT,/,no,/' >>"$csv"
                    continue
                fi
                ((noisy)) && noisy_kept+=("$s $tool run $run")
                printf '%s\n' "${rows[@]}" | sed 's/,KEPT,/,yes,/' >>"$csv"
                break
            done
            if [[ "$tool" == secrate ]]; then
                # secrate's own summary lines (read N, added M) land in the log;
                # copy the last two next to the figures for a quick look.
                grep '^snapshot .* saved:' "$BENCH_LOG" | tail -n 2 | sed 's/^/    secrate: /' >&2 || true
                if ((verify && run == 1)); then
                    bench_log "verifying the secrate repository (untimed): check --read-data, snapshots"
                    if ! SECRATE_STORE="file://$repo" "$SECRATE" check --read-data >>"$BENCH_LOG" 2>&1; then
                        bench_log "FAILED: secrate check --read-data on $s (see $BENCH_LOG)"
                        failures+=("$s secrate check --read-data failed")
                    fi
                    SECRATE_STORE="file://$repo" "$SECRATE" snapshots >>"$BENCH_LOG" 2>&1 || true
                fi
            fi
        done
    done
done
rm -rf "$repo" "$restic_cache" "$BORG_BASE_DIR"

# ---------------------------------------------------------------- report
# Values of column COL for kept rows matching dataset, tool and phase (rc 0).
col() {
    local s="$1" tool="$2" phase="$3" colname="$4"
    awk -F, -v s="$s" -v t="$tool" -v p="$phase" -v c="$colname" '
        NR == 1 { for (i = 1; i <= NF; i++) idx[$i] = i; next }
        $1 == s && $2 == t && $4 == p && $idx["kept"] == "yes" && $NF == 0 { print $idx[c] }' "$csv"
}
# "median (min–max)" of a column, scaled by DIV and printed with FMT.
spread() {
    local vals=() v med lo hi div="${5:-1}" fmt="${6:-%.1f}"
    while read -r v; do vals+=("$(awk -v v="$v" -v d="$div" 'BEGIN { print v / d }')"); done < <(col "$1" "$2" "$3" "$4")
    ((${#vals[@]})) || {
        echo "n/a"
        return
    }
    med="$(bench_median "${vals[@]}")"
    lo="$(bench_min "${vals[@]}")"
    hi="$(bench_max "${vals[@]}")"
    if ((${#vals[@]} == 1)); then
        awk -v m="$med" -v f="$fmt" 'BEGIN { printf f "\n", m }'
    else
        awk -v m="$med" -v l="$lo" -v h="$hi" -v f="$fmt" 'BEGIN { printf f " (" f "–" f ")\n", m, l, h }'
    fi
}
med() {
    local vals=()
    mapfile -t vals < <(col "$1" "$2" "$3" "$4")
    bench_median "${vals[@]}"
}

{
    echo "# Backup benchmark: secrate vs restic and borg"
    echo
    invocation="scripts/bench-backup.sh --runs $runs"
    ((quick)) && invocation+=" --quick"
    [[ "$sets" == "random,source" ]] || invocation+=" --sets $sets"
    [[ "$tools_arg" == "secrate,restic,restic-nocomp,borg" ]] || invocation+=" --tools $tools_arg"
    echo "Command: \`$invocation\`"
    echo
    bench_machine_info "$workdir" | sed 's/^/- /'
    echo "- secrate: $secrate_version"
    echo "- restic: $restic_version"
    echo "- borg: $borg_version"
    echo "- work dir (data and repositories, same disk): $workdir"
    for tool in "${tools[@]}"; do
        echo "- tool $tool: ${tool_desc[$tool]}"
    done
    echo "- runs: $runs per data set and tool, alternating ${tools[*]}"
    others="$(awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) idx[$i] = i; next }
        $idx["kept"] == "no" { if ($idx["phase"] == "first") d++; next }
        $idx["wall_s"] >= 1 { o = $idx["others_cpu_pct"]; n++; if (o > m) m = o; if (o > '"$max_others"') b++ }
        END { printf "%d measurement(s) discarded and taken again; in the kept backups of 1 s or more, at most %d%% of one core, %d of %d above %d%%", d, m, b, n, '"$max_others"' }' "$csv")"
    echo "- quiet machine: waited before each measurement until at most ${max_busy}% busy (at most ${idle_wait}s); CPU used by other processes during the timed backups: $others"
    echo "- page caches dropped before each first backup: $caches_note; second backups run right after, page cache warm"
    for s in "${set_list[@]}"; do
        echo "- data set $s: ${set_desc[$s]}: ${set_files[$s]} files, $(awk -v b="${set_bytes[$s]}" 'BEGIN { printf "%.2f GB", b / 1e9 }')"
    done
    echo
    echo "Medians, with min–max over the runs in parentheses. MB/s = data set bytes / first-backup wall time (10^6 bytes). CPU = (user+sys)/wall: 100% is one core busy, 200% both. Store = du -sb of the repository after the first backup."
    echo
    echo "| data set | tool | first backup s | MB/s | CPU % | peak RSS MiB | unchanged re-run s | re-run RSS MiB | store MB | store / data |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    for s in "${set_list[@]}"; do
        for tool in "${tools[@]}"; do
            store_med="$(med "$s" "$tool" first store_bytes)"
            echo "| $s | $tool | $(spread "$s" "$tool" first wall_s 1 %.1f) | $(spread "$s" "$tool" first mb_per_s 1 %.0f) | $(spread "$s" "$tool" first cpu_pct 1 %.0f) | $(spread "$s" "$tool" first peak_rss_kib 1024 %.0f) | $(spread "$s" "$tool" second wall_s 1 %.2f) | $(spread "$s" "$tool" second peak_rss_kib 1024 %.0f) | $(spread "$s" "$tool" first store_bytes 1e6 %.0f) | $(bench_div "$store_med" "${set_bytes[$s]}" %.3f) |"
        done
    done
    echo
    echo "Ratios of medians, secrate / restic (throughput > 1 and the others < 1 favour secrate):"
    echo
    echo "| data set | vs | throughput (MB/s) | first backup time | unchanged re-run time | peak RSS | store size |"
    echo "|---|---|---|---|---|---|---|"
    for s in "${set_list[@]}"; do
        for ref in "${tools[@]}"; do
            [[ "$ref" == secrate ]] && continue
            echo "| $s | $ref | $(bench_div "$(med "$s" secrate first mb_per_s)" "$(med "$s" "$ref" first mb_per_s)") | $(bench_div "$(med "$s" secrate first wall_s)" "$(med "$s" "$ref" first wall_s)") | $(bench_div "$(med "$s" secrate second wall_s)" "$(med "$s" "$ref" second wall_s)") | $(bench_div "$(med "$s" secrate first peak_rss_kib)" "$(med "$s" "$ref" first peak_rss_kib)") | $(bench_div "$(med "$s" secrate first store_bytes)" "$(med "$s" "$ref" first store_bytes)" %.3f) |"
        done
    done
    if ((${#noisy_kept[@]})); then
        echo
        echo "Kept although other processes were busy during all $max_attempts attempts:"
        printf -- '- %s\n' "${noisy_kept[@]}"
    fi
    if ((${#failures[@]})); then
        echo
        echo "Failures (rows with rc != 0 are left out of the medians):"
        printf -- '- %s\n' "${failures[@]}"
    fi
    echo
    echo "CSV: $csv"
    echo "Log: $BENCH_LOG"
} >"$md"

cat "$md"
((${#failures[@]} == 0))
