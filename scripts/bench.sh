#!/usr/bin/env bash
# The secrate benchmark suite: the mount and batch backup side by side with
# their peers (plain directory, gocryptfs, restic, borg) on this machine.
#
#   scripts/bench.sh [OPTIONS] [WORKLOAD...]      (default: all)
#
# Workloads (ids from the issue "Performance"):
#   ceil     ceilings: memcpy (dd /dev/zero -> /dev/null); a no-op FUSE
#            filesystem (examples/nullfs.rs, set up as the mount is):
#            P2's dd write and cold read through it; the disk's ceiling
#            is P2's plain directory row
#   p1       gocryptfs's canonical steps through the mount: untar the Linux
#            source, md5sum -c, ls -lR, rm -rf (plain dir, gocryptfs,
#            secrate, and as the FUSE ceiling an in-memory FUSE filesystem,
#            examples/memfs.rs, set up as the mount is); secrate also times
#            the seal + upload of the untarred tree. --quick: the
#            drivers/net subtree (5.7k files). P1_TARBALL=gz untars a gzip
#            tarball (`tar xzf`, gocryptfs's own form) instead of the plain tar
#   p2       dd bs=1M conv=fsync of 2 GiB random data (--quick: 1 GiB), then
#            a cold read (caches dropped; gocryptfs and secrate remounted;
#            secrate first on its own cache dir, then on a fresh one, i.e.
#            from the store)
#   p3       batch backup throughput: scripts/bench-backup.sh (secrate,
#            restic with and without compression, borg lz4)
#   p4       store size after 20 successive versions of a source tree
#            (the Linux tree, --quick drivers/net, edited by
#            bench_mutate_tree) for secrate, restic, borg lz4
#   p5       seal after touching one file in a 100k-file tree through the
#            mount (`secrate snapshot`), and incremental backups of that
#            tree with one file changed / unchanged: secrate, restic, borg
#   p6       first byte of a file in the oldest of 3 snapshots of a
#            100k-file repository, cold (page cache dropped, fresh cache):
#            secrate mount + .history vs restic mount (its cache removed)
#   p8       a whole old snapshot read back through the mount on an empty
#            cache, as a restore by copy reads it: md5sum -c of every file
#            of the Linux tree (--quick: drivers/net) in .history, the
#            repository on a local directory and (not with --quick) on the
#            S3 test server (s3s-fs on loopback), vs restic mount of the
#            same tree (its cache removed) and the plain source directory
#   p7       peak RSS: backup of 1M files (--quick 100k) and a mount
#            serving them (after ls -lR of the whole tree): secrate vs restic
#            (one run whatever --runs says)
#   history  1,000 snapshots in a mount (touch + snapshot --no-wait), then
#            ls / ls -l of .history warm and after a fresh mount
#   report   (re)write the summary of the results directory given by --out
#
# Options:
#   --quick          smaller data and fewer runs (whole suite < 15 min)
#   --runs N         runs per measurement (default 3, --quick 1; p5 seals
#                    and p6 first-byte reads are repeated 5 / 3 times)
#   --workdir DIR    data, stores, mounts (default $SECRATE_BENCH_DIR or
#                    /var/tmp/secrate-bench; generated data is reused)
#   --out DIR        results directory (default WORKDIR/results/bench-STAMP)
#   --secrate BIN    use this binary instead of building target/release
#   --max-busy PCT   wait before each measurement until the machine is at
#                    most PCT% busy (default 30), at most --idle-wait
#                    SECONDS (default 20, --quick 10); the CPU used by others during
#                    each timed step is recorded anyway (others_cpu_pct)
#
# Results: OUT/results.csv (one row per measurement: workload, case, tool,
# run, metric, value, unit, wall, user, sys, peak RSS, others' CPU),
# OUT/summary.json and OUT/summary.md (medians, min-max, ratios, targets),
# OUT/*.png charts (gnuplot), OUT/bench.log (every command's output).
# Needs root (mounts, drop_caches, apt-get). Installs fuse3, gocryptfs,
# restic, borgbackup, gnuplot-nox, linux-source-6.1, python3 if missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
# shellcheck source=scripts/lib/bench-common.sh
. "$ROOT/scripts/lib/bench-common.sh"

quick=0
runs=""
W="${SECRATE_BENCH_DIR:-/var/tmp/secrate-bench}"
OUT=""
secrate_bin=""
max_busy=30
idle_wait=""
workloads=()
while (($#)); do
    case "$1" in
    --quick) quick=1 ;;
    --runs) runs="$2"; shift ;;
    --workdir) W="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --secrate) secrate_bin="$2"; shift ;;
    --max-busy) max_busy="$2"; shift ;;
    --idle-wait) idle_wait="$2"; shift ;;
    -h | --help)
        awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
        exit 0
        ;;
    ceil | p1 | p2 | p3 | p4 | p5 | p6 | p7 | p8 | history | report | all) workloads+=("$1") ;;
    *) bench_die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done
((${#workloads[@]})) || workloads=(all)
if [[ " ${workloads[*]} " == *" all "* ]]; then
    workloads=(ceil p1 p2 p5 p6 p8 history p4 p3 p7)
fi
[[ -n "$runs" ]] || runs=$((quick ? 1 : 3))
[[ -n "$idle_wait" ]] || idle_wait=$((quick ? 10 : 20))
# How busy the machine is, sampled before each of ~130 measurements: 2 s
# each would be 4-5 minutes of a quick run.
((quick)) && export BENCH_BUSY_SAMPLE="${BENCH_BUSY_SAMPLE:-0.5}"
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || bench_die "--runs wants a positive integer"

bench_require_root
mkdir -p "$W" "$W/data" "$W/bin"
W="$(cd "$W" && pwd)"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
((quick)) && stamp+="-quick"
OUT="${OUT:-$W/results/bench-$stamp}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
CSV="$OUT/results.csv"
export BENCH_LOG="$OUT/bench.log"
touch "$BENCH_LOG"
[[ -s "$CSV" ]] || echo "workload,case,tool,run,metric,value,unit,wall_s,user_s,sys_s,peak_rss_kib,others_cpu_pct,busy_before_pct" >"$CSV"
# shellcheck source=scripts/lib/bench-fs.sh
. "$ROOT/scripts/lib/bench-fs.sh"
# shellcheck source=scripts/lib/bench-data.sh
. "$ROOT/scripts/lib/bench-data.sh"
# shellcheck source=scripts/lib/bench-report.sh
. "$ROOT/scripts/lib/bench-report.sh"
# shellcheck source=scripts/lib/s3-server.sh
. "$ROOT/scripts/lib/s3-server.sh"

if [[ " ${workloads[*]} " == " report " ]]; then
    bench_report "$OUT"
    exit 0
fi
bench_log "results: $OUT (log: $BENCH_LOG)"
trap 'bench_fs_cleanup; s3_server_stop' EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- tools
bench_install_if_missing python3 python3 || bench_die "cannot install python3"
bench_install_if_missing fusermount3 fuse3 || bench_die "cannot install fuse3"
bench_install_if_missing gocryptfs gocryptfs || bench_die "cannot install gocryptfs"
bench_install_if_missing restic restic || bench_die "cannot install restic"
bench_install_if_missing borg borgbackup || bench_die "cannot install borgbackup"
bench_install_if_missing gnuplot gnuplot-nox || bench_log "warning: no gnuplot, no charts"
bench_install_if_missing jq jq || bench_die "cannot install jq"
[[ -x /usr/bin/time ]] || bench_install_if_missing /usr/bin/time time || bench_die "cannot install time"

if [[ -z "$secrate_bin" ]]; then
    bench_log "building secrate (cargo build --release)"
    cargo build --release --quiet --bin secrate --example nullfs --example memfs >>"$BENCH_LOG" 2>&1 || bench_die "cargo build --release failed (see $BENCH_LOG)"
    secrate_bin="$ROOT/target/release/secrate"
    secrate_rev="$(git -C "$ROOT" describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)"
else
    secrate_rev="given binary"
fi
# A private copy: other people rebuild target/ while this runs.
cp "$secrate_bin" "$W/bin/secrate.bench"
SECRATE="$W/bin/secrate.bench"
# The example filesystems for the ceilings (no-op, in memory): beside a
# given binary, or built.
for ex in nullfs memfs; do
    bin="$(dirname "$secrate_bin")/examples/$ex"
    if [[ ! -x "$bin" ]] && [[ " ${workloads[*]} " == *" ceil "* || " ${workloads[*]} " == *" p1 "* ]]; then
        cargo build --release --quiet --example "$ex" >>"$BENCH_LOG" 2>&1 || bench_die "cargo build --release --example $ex failed (see $BENCH_LOG)"
        bin="$ROOT/target/release/examples/$ex"
    fi
    [[ -x "$bin" ]] && cp "$bin" "$W/bin/$ex.bench" && bin="$W/bin/$ex.bench"
    case "$ex" in
    nullfs) NULLFS="$bin" ;;
    memfs) MEMFS="$bin" ;;
    esac
done
{
    bench_machine_info "$W"
    echo "secrate: $(bench_tool_version "$SECRATE" --version) ($secrate_rev, sha256 $(sha256sum "$SECRATE" | cut -c1-12))"
    echo "gocryptfs: $(bench_tool_version gocryptfs -version)"
    echo "restic: $(bench_tool_version restic version)"
    echo "borg: $(bench_tool_version borg --version)"
    echo "quick: $quick"
    echo "runs: $runs"
    echo "workloads: ${workloads[*]}"
} >"$OUT/machine-$stamp.txt"
cat "$OUT/machine-$stamp.txt" >&2

# ---------------------------------------------------------------- recording
# rec WORKLOAD CASE TOOL RUN METRIC VALUE UNIT: one CSV row, with the last
# bench_time's figures (clear them with no_timing for derived values).
rec() {
    echo "$1,$2,$3,$4,$5,$6,$7,${BENCH_WALL:-},${BENCH_USER:-},${BENCH_SYS:-},${BENCH_RSS_KB:-},${BENCH_OTHER_CPU_PCT:-},${BENCH_BUSY_PCT:-}" >>"$CSV"
    bench_log "$1 $2 $3 run $4: $5 = $6 $7"
}
no_timing() { BENCH_WALL="" BENCH_USER="" BENCH_SYS="" BENCH_RSS_KB="" BENCH_OTHER_CPU_PCT=""; }
idle() { bench_wait_idle "$max_busy" "$idle_wait"; }
# timed LABEL CMD...: wait for a quiet machine, run, fail loudly. A shell
# function (mount, umount, snapshot: the work is in the daemon) gets the
# wall clock only.
timed() {
    idle
    if declare -F "$2" >/dev/null; then
        local t0 j0
        t0="$(now)"
        j0="$(bench_cpu_jiffies)"
        set +e
        "${@:2}" >>"$BENCH_LOG" 2>&1
        BENCH_RC=$?
        set -e
        BENCH_WALL="$(since "$t0")"
        BENCH_USER="" BENCH_SYS="" BENCH_RSS_KB=""
        BENCH_OTHER_CPU_PCT="$(awk -v j0="$j0" -v j1="$(bench_cpu_jiffies)" -v hz="$(getconf CLK_TCK)" -v w="$BENCH_WALL" \
            'BEGIN { if (w > 0) printf "%.0f", 100 * (j1 - j0) / hz / w }')" # all CPU, daemon included
        echo "=== $1: rc=$BENCH_RC wall=${BENCH_WALL}s (shell function; machine cpu ${BENCH_OTHER_CPU_PCT}%)" >>"$BENCH_LOG"
    else
        bench_time "$@"
    fi
    if [[ "$BENCH_RC" != 0 ]]; then
        bench_log "FAILED ($BENCH_RC): ${*:2} (see $BENCH_LOG)"
        echo "FAILED $1: ${*:2}" >>"$OUT/failures.txt"
    fi
}
mbps() { awk -v b="$1" -v w="$2" 'BEGIN { if (w > 0) printf "%.1f", b / w / 1e6; else print "" }'; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }'; }
drop() { bench_drop_caches || true; }

# fs_dir TOOL: where fs_up mounts TOOL.
fs_dir() {
    case "$1" in
    plain) echo "$W/plain" ;;
    gocryptfs) echo "$W/gc-mnt" ;;
    secrate) echo "$W/s-mnt" ;;
    memfs) echo "$W/mem-mnt" ;;
    esac
}
# fs_up TOOL: a fresh, empty filesystem of that kind; sets FS_DIR.
fs_up() {
    FS_DIR="$(fs_dir "$1")"
    case "$1" in
    plain)
        rm -rf "$FS_DIR"
        mkdir -p "$FS_DIR"
        ;;
    gocryptfs)
        gc_init
        gc_mount "$FS_DIR"
        ;;
    secrate)
        S_STORE="$W/s-store"
        sec_init
        rm -rf "$W/s-cache" "$W/s-cache2"
        sec_mount "$FS_DIR" "$W/s-cache"
        ;;
    memfs) ex_mount "$MEMFS" "$FS_DIR" ;;
    esac
}
fs_down() {
    case "$1" in
    plain) rm -rf "$W/plain" ;;
    gocryptfs)
        gc_umount "$W/gc-mnt"
        rm -rf "$W/gc-cipher"
        ;;
    secrate)
        mountpoint -q "$W/s-mnt" && sec_umount "$W/s-mnt"
        rm -rf "$W/s-store" "$W/s-cache" "$W/s-cache2"
        ;;
    memfs) ex_umount "$W/mem-mnt" ;;
    esac
}

linux_tar() { # sets L_TAR (uncompressed tar), L_MD5 (md5sum list), L_TOP
    local tarball=/usr/src/linux-source-6.1.tar.xz src
    bench_install_pkg_for_file "$tarball" linux-source-6.1 || bench_die "linux-source-6.1 not available"
    L_TOP=linux-source-6.1
    if ((quick)); then
        src="$W/data/linux-6.1-drivers-net"
        L_TAR="$W/data/p1-drivers-net.tar"
        if [[ ! -e "$src.complete" ]]; then
            rm -rf "$src" && mkdir -p "$src"
            tar -xJf "$tarball" -C "$src" linux-source-6.1/drivers/net
            touch "$src.complete"
        fi
        [[ -e "$L_TAR.complete" ]] || { tar -cf "$L_TAR" -C "$src" "$L_TOP" && touch "$L_TAR.complete"; }
    else
        src="$W/data/linux-6.1"
        L_TAR="$W/data/linux-source-6.1.tar"
        if [[ ! -e "$src.complete" ]]; then
            rm -rf "$src" && mkdir -p "$src"
            tar -xJf "$tarball" -C "$src"
            touch "$src.complete"
        fi
        [[ -e "$L_TAR.complete" ]] || { xz -dc "$tarball" >"$L_TAR" && touch "$L_TAR.complete"; }
    fi
    L_SRC="$src/$L_TOP"
    L_MD5="$L_TAR.md5"
    # P1_TARBALL=gz: untar as gocryptfs's canonical-benchmarks.bash does
    # (`tar xzf` of a gzip tarball, its decompression part of the step);
    # the default untars the plain tar, which times the filesystems alone.
    L_UNTAR=(tar -xf "$L_TAR")
    if [[ "${P1_TARBALL:-tar}" == gz ]]; then
        [[ -e "$L_TAR.gz.complete" ]] || { gzip -c "$L_TAR" >"$L_TAR.gz" && touch "$L_TAR.gz.complete"; }
        L_UNTAR=(tar -xzf "$L_TAR.gz")
    elif [[ "${P1_TARBALL:-tar}" != tar ]]; then
        bench_die "P1_TARBALL must be tar or gz"
    fi
    [[ -s "$L_MD5" ]] || (cd "$src" && find "$L_TOP" -type f -print0 | sort -z | xargs -0 md5sum) >"$L_MD5"
}

# ---------------------------------------------------------------- ceilings
w_ceil() {
    local n=$((quick ? 5000 : 20000)) r
    for ((r = 1; r <= runs; r++)); do
        timed ceil/memcpy dd if=/dev/zero of=/dev/null bs=1M count="$n"
        rec ceil memcpy dd "$r" mb_per_s "$(mbps $((n * 1048576)) "$BENCH_WALL")" MB/s
    done
    # P2's steps through a filesystem that does nothing: what FUSE itself
    # allows. The read comes after a remount and dropped caches, as P2's.
    local gib=$((quick ? 1 : 2)) src bytes mnt="$W/null-mnt"
    bytes=$((gib * 1073741824))
    src="$W/data/random-${gib}G.bin"
    bench_random_file "$src" "$bytes"
    for ((r = 1; r <= runs; r++)); do
        ex_mount "$NULLFS" "$mnt"
        cat "$src" >/dev/null
        timed ceil/nullfs/write dd if="$src" of="$mnt/null" bs=1M conv=fsync
        rec ceil fuse_write nullfs "$r" mb_per_s "$(mbps "$bytes" "$BENCH_WALL")" MB/s
        ex_umount "$mnt"
        drop
        ex_mount "$NULLFS" "$mnt"
        # A fresh mount knows no size: set it as the write left it.
        truncate -s "$bytes" "$mnt/null"
        drop
        timed ceil/nullfs/read dd if="$mnt/null" of=/dev/null bs=1M
        rec ceil fuse_read_cold nullfs "$r" mb_per_s "$(mbps "$bytes" "$BENCH_WALL")" MB/s
        ex_umount "$mnt"
    done
}

# ---------------------------------------------------------------- P1
# Untar creates some 80k inodes per filesystem and rm -rf frees them. On
# ext4 without a journal (this machine's disk) the inode allocator passes
# over every inode freed in the last 60 s (6 min while its inode table block
# is dirty), reading each one it passes: here an untar of the Linux tree
# right after an rm -rf of one took 4x as long (plain 6.4 -> 26.9 s, secrate
# 36.8 -> 62.5 s), and each filesystem's untar used to follow the previous
# one's rm. So a run first sets up every filesystem and untars into each
# (none of them deletes anything), then runs md5sum -c, ls -lR and rm -rf in
# turn on each; the next run starts when the deletions are P1_SETTLE seconds
# old (default 400; the first run starts at once). The order of the
# filesystems rotates from run to run.
P1_SETTLE="${P1_SETTLE:-400}"
LAST_DELETE=""
settle() {
    sync
    [[ -n "$LAST_DELETE" ]] || return 0
    local left
    left="$(awk -v t="$LAST_DELETE" -v n="$(now)" -v s="$P1_SETTLE" 'BEGIN { l = t + s - n; printf "%d", (l > 0 ? l + 1 : 0) }')"
    if ((left > 0)); then
        bench_log "P1: waiting ${left}s until the last deletions are ${P1_SETTLE}s old"
        sleep "$left"
    fi
}

w_p1() {
    linux_tar
    local r i tool files dir all=(plain gocryptfs secrate memfs) tools
    files="$(wc -l <"$L_MD5")"
    bench_log "P1: ${L_UNTAR[*]} ($files files)"
    no_timing
    rec p1 tree info 0 files "$files" files
    rec p1 tarball info 0 form "${P1_TARBALL:-tar}" -
    for ((r = 1; r <= runs; r++)); do
        tools=()
        for ((i = 0; i < ${#all[@]}; i++)); do tools+=("${all[$(((i + r - 1) % ${#all[@]}))]}"); done
        settle
        for tool in "${tools[@]}"; do fs_up "$tool"; done
        for tool in "${tools[@]}"; do
            dir="$(fs_dir "$tool")"
            drop
            timed "p1/$tool/untar" "${L_UNTAR[@]}" -C "$dir"
            rec p1 untar "$tool" "$r" wall_s "$BENCH_WALL" s
            if [[ "$tool" == secrate ]]; then
                timed p1/secrate/seal sec snapshot -q "$dir"
                rec p1 seal_after_untar secrate "$r" wall_s "$BENCH_WALL" s
            fi
        done
        for tool in "${tools[@]}"; do
            dir="$(fs_dir "$tool")"
            drop
            timed "p1/$tool/md5sum" bash -c "cd '$dir' && md5sum -c --quiet '$L_MD5'"
            rec p1 md5sum "$tool" "$r" wall_s "$BENCH_WALL" s
        done
        for tool in "${tools[@]}"; do
            dir="$(fs_dir "$tool")"
            drop
            timed "p1/$tool/ls" bash -c "ls -lR '$dir/$L_TOP' >/dev/null"
            rec p1 ls_lR "$tool" "$r" wall_s "$BENCH_WALL" s
        done
        for tool in "${tools[@]}"; do
            dir="$(fs_dir "$tool")"
            drop
            timed "p1/$tool/rm" rm -rf "$dir/$L_TOP"
            rec p1 rm_rf "$tool" "$r" wall_s "$BENCH_WALL" s
            if [[ "$tool" == secrate ]]; then
                timed p1/secrate/umount sec_umount "$dir"
                rec p1 umount_after secrate "$r" wall_s "$BENCH_WALL" s
            fi
        done
        for tool in "${tools[@]}"; do fs_down "$tool"; done
        LAST_DELETE="$(now)"
    done
}

# ---------------------------------------------------------------- P2
w_p2() {
    local gib=$((quick ? 1 : 2)) r tool src bytes
    bytes=$((gib * 1073741824))
    src="$W/data/random-${gib}G.bin"
    bench_random_file "$src" "$bytes"
    no_timing
    rec p2 file info 0 bytes "$bytes" B
    for ((r = 1; r <= runs; r++)); do
        for tool in plain gocryptfs secrate; do
            fs_up "$tool"
            cat "$src" >/dev/null # the source stays in the page cache
            timed "p2/$tool/write" dd if="$src" of="$FS_DIR/big" bs=1M conv=fsync
            rec p2 write "$tool" "$r" mb_per_s "$(mbps "$bytes" "$BENCH_WALL")" MB/s
            case "$tool" in
            plain)
                drop
                timed p2/plain/read dd if="$FS_DIR/big" of=/dev/null bs=1M
                rec p2 read_cold plain "$r" mb_per_s "$(mbps "$bytes" "$BENCH_WALL")" MB/s
                ;;
            gocryptfs)
                gc_umount "$FS_DIR"
                drop
                gc_mount "$FS_DIR"
                timed p2/gocryptfs/read dd if="$FS_DIR/big" of=/dev/null bs=1M
                rec p2 read_cold gocryptfs "$r" mb_per_s "$(mbps "$bytes" "$BENCH_WALL")" MB/s
                ;;
            secrate)
                # Remounted on its cache, as gocryptfs on its cipher
                # directory, and read right after the write as the others
                # are; then a fresh cache, whose read comes from the store.
                timed p2/secrate/umount sec_umount "$FS_DIR"
                rec p2 umount_after_write secrate "$r" wall_s "$BENCH_WALL" s
                drop
                sec_mount "$FS_DIR" "$W/s-cache"
                timed p2/secrate/read-cache dd if="$FS_DIR/big" of=/dev/null bs=1M
                rec p2 read_cold_cache_kept secrate "$r" mb_per_s "$(mbps "$bytes" "$BENCH_WALL")" MB/s
                sec_umount "$FS_DIR"
                drop
                timed p2/secrate/mount-fresh sec_mount "$FS_DIR" "$W/s-cache2"
                rec p2 mount_fresh_cache secrate "$r" wall_s "$BENCH_WALL" s
                timed p2/secrate/read-store dd if="$FS_DIR/big" of=/dev/null bs=1M
                rec p2 read_cold secrate "$r" mb_per_s "$(mbps "$bytes" "$BENCH_WALL")" MB/s
                ;;
            esac
            fs_down "$tool"
        done
    done
}

# ---------------------------------------------------------------- P3
w_p3() {
    local args=(--runs "$runs" --out "$OUT" --secrate "$SECRATE" --workdir "$W" --max-busy 20 --idle-wait "$idle_wait" --attempts 2)
    ((quick)) && args+=(--quick --no-verify)
    bench_log "P3: scripts/bench-backup.sh ${args[*]}"
    "$ROOT/scripts/bench-backup.sh" "${args[@]}" >>"$BENCH_LOG" || {
        bench_log "FAILED: bench-backup.sh (see $BENCH_LOG)"
        echo "FAILED p3: bench-backup.sh" >>"$OUT/failures.txt"
    }
}

# ---------------------------------------------------------------- P4
w_p4() {
    linux_tar
    local tree="$W/p4-tree" base v tool store
    base="$(dirname "$L_SRC")"
    rm -rf "$tree" "$W/p4-secrate" "$W/p4-restic" "$W/p4-borg" "$W/restic-cache"
    mkdir -p "$tree"
    cp -a "$L_SRC" "$tree/"
    S_STORE="$W/p4-secrate"
    sec_init
    restic init --repo "$W/p4-restic" --cache-dir "$W/restic-cache" >>"$BENCH_LOG" 2>&1
    borg init -e repokey-blake2 "$W/p4-borg" >>"$BENCH_LOG" 2>&1
    no_timing
    rec p4 tree info 0 files "$(bench_file_count "$tree")" files
    rec p4 tree info 0 bytes "$(bench_file_bytes "$tree")" B
    for ((v = 0; v < 20; v++)); do
        ((v == 0)) || bench_mutate_tree "$tree" "$v"
        sync
        for tool in secrate restic borg; do
            case "$tool" in
            # The sizes are the point here: no waiting for a quiet machine.
            secrate) bench_time "p4/v$v/secrate" env "SECRATE_STORE=file://$S_STORE" "$SECRATE" backup -q "$tree" ;;
            restic) bench_time "p4/v$v/restic" restic backup -q --repo "$W/p4-restic" --cache-dir "$W/restic-cache" "$tree" ;;
            borg) bench_time "p4/v$v/borg" borg create --compression lz4 "$W/p4-borg::v$v" "$tree" ;;
            esac
            [[ "$BENCH_RC" == 0 ]] || echo "FAILED p4/v$v/$tool (rc $BENCH_RC)" >>"$OUT/failures.txt"
            rec p4 "v$v" "$tool" 1 backup_s "$BENCH_WALL" s
            store="$W/p4-$tool"
            no_timing
            rec p4 "v$v" "$tool" 1 store_bytes "$(bench_dir_bytes "$store")" B
        done
    done
    rm -rf "$tree" "$W/p4-secrate" "$W/p4-restic" "$W/p4-borg" "$W/restic-cache"
    : "$base"
}

# ---------------------------------------------------------------- P5-P7 data
tree100k() {
    T100K="$W/data/tree100k"
    if [[ ! -e "$T100K.complete" ]]; then
        bench_log "generating 100k files in $T100K"
        rm -rf "$T100K"
        bench_gen_tree "$T100K" 100 1000 200 3000 1
        tar -cf "$T100K.tar" -C "$W/data" tree100k
        touch "$T100K.complete"
    fi
}
tree1m() {
    T1M="$W/data/tree1m"
    if [[ ! -e "$T1M.complete" ]]; then
        bench_log "generating 1M files in $T1M"
        rm -rf "$T1M"
        bench_gen_tree "$T1M" 1000 1000 50 300 2
        touch "$T1M.complete"
    fi
}

# fresh_repo TOOL DIR / backup_tool TOOL DIR PARENT NAME
fresh_repo() {
    rm -rf "$2" "$W/restic-cache"
    case "$1" in
    secrate) S_STORE="$2" && sec_init ;;
    restic) restic init --repo "$2" --cache-dir "$W/restic-cache" >>"$BENCH_LOG" 2>&1 ;;
    borg) borg init -e repokey-blake2 "$2" >>"$BENCH_LOG" 2>&1 ;;
    esac
}
_borg_n=0
backup_tool() {
    local tool="$1" repo="$2" parent="$3" name="$4"
    case "$tool" in
    secrate) timed "$5" env "SECRATE_STORE=file://$repo" "$SECRATE" backup -q "$parent/$name" ;;
    restic) timed "$5" bash -c "cd '$parent' && restic backup -q --repo '$repo' --cache-dir '$W/restic-cache' '$name'" ;;
    borg)
        _borg_n=$((_borg_n + 1))
        timed "$5" bash -c "cd '$parent' && borg create --compression lz4 '$repo::b$_borg_n' '$name'"
        ;;
    esac
}

# ---------------------------------------------------------------- P5
# sec_uploaded MNT: the mount has uploaded everything it sealed.
sec_uploaded() {
    sec status --json "$1" 2>/dev/null | jq -e '.sealed_gen == .uploaded_gen and .pending_objects == 0' >/dev/null
}
w_p5() {
    tree100k
    local r mnt="$W/s-mnt" tool repo f seals=$((quick ? 3 : 5)) t0
    # Through the mount.
    S_STORE="$W/p5-store"
    sec_init
    rm -rf "$W/p5-cache"
    sec_mount "$mnt" "$W/p5-cache"
    timed p5/untar tar -xf "$T100K.tar" -C "$mnt"
    rec p5 untar_100k_into_mount secrate 1 wall_s "$BENCH_WALL" s
    timed p5/first-seal sec snapshot -q "$mnt"
    rec p5 first_seal_100k secrate 1 wall_s "$BENCH_WALL" s
    for ((r = 1; r <= seals; r++)); do
        f="$mnt/tree100k/d00$((40 + r))/f0$((100 + r))"
        # The seal alone (--no-wait), then how long its upload takes.
        echo "change no-wait $r" >>"$f"
        timed p5/seal-nowait sec snapshot --no-wait -q "$mnt"
        rec p5 seal_1_change_nowait secrate "$r" wall_s "$BENCH_WALL" s
        t0="$(now)"
        bench_poll 600 sec_uploaded "$mnt" || bench_log "warning: upload not done after 600 s"
        no_timing
        rec p5 upload_after_seal_nowait secrate "$r" wall_s "$(since "$t0")" s
        # Seal and wait for the upload: the figure of the target.
        echo "change $r" >>"$f"
        timed p5/seal sec snapshot -q "$mnt"
        rec p5 seal_1_change secrate "$r" wall_s "$BENCH_WALL" s
    done
    timed p5/umount sec_umount "$mnt"
    rec p5 umount_100k secrate 1 wall_s "$BENCH_WALL" s
    rm -rf "$W/p5-store" "$W/p5-cache"
    # Batch backups of the same tree.
    for ((r = 1; r <= runs; r++)); do
        for tool in secrate restic borg; do
            repo="$W/p5-$tool"
            fresh_repo "$tool" "$repo"
            drop
            backup_tool "$tool" "$repo" "$W/data" tree100k "p5/$tool/initial"
            rec p5 backup_initial "$tool" "$r" wall_s "$BENCH_WALL" s
            echo "change $r $tool" >>"$T100K/d0007/f0007"
            backup_tool "$tool" "$repo" "$W/data" tree100k "p5/$tool/1change"
            rec p5 backup_1_change "$tool" "$r" wall_s "$BENCH_WALL" s
            backup_tool "$tool" "$repo" "$W/data" tree100k "p5/$tool/unchanged"
            rec p5 backup_unchanged "$tool" "$r" wall_s "$BENCH_WALL" s
            rm -rf "$repo" "$W/restic-cache"
        done
    done
}

# ---------------------------------------------------------------- P6
w_p6() {
    tree100k
    local r v tool mnt="$W/s-mnt" snap rid rpath t0 reps=$((runs < 3 ? 3 : runs)) i
    S_STORE="$W/p6-secrate"
    fresh_repo secrate "$W/p6-secrate"
    fresh_repo restic "$W/p6-restic"
    for ((v = 1; v <= 3; v++)); do
        ((v == 1)) || for ((i = 0; i < 100; i++)); do echo "p6 v$v" >>"$T100K/d00$((i % 100 < 10 ? 10 : i % 100))/f0$((300 + i))"; done
        backup_tool secrate "$W/p6-secrate" "$W/data" tree100k p6/build
        backup_tool restic "$W/p6-restic" "$W/data" tree100k p6/build
    done
    # Where the file is, found untimed.
    rm -rf "$W/p6-cache"
    sec_mount "$mnt" "$W/p6-cache"
    snap="$(find "$mnt/.history" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort | head -n 1)"
    sec_umount "$mnt"
    rid="$(restic snapshots --json --repo "$W/p6-restic" --cache-dir "$W/restic-cache" | jq -r 'sort_by(.time) | .[0].short_id')"
    rpath="ids/$rid/tree100k/d0050/f0500"
    restic_mount_start "$W/p6-restic" "$W/r-mnt"
    bench_poll 300 head -c1 "$W/r-mnt/$rpath" || bench_log "warning: restic mount does not show $rpath"
    restic_mount_stop
    bench_log "P6: secrate .history/$snap/d0050/f0500, restic $rpath"
    for ((r = 1; r <= reps; r++)); do
        # secrate: fresh cache dir, page cache dropped.
        rm -rf "$W/p6-cache"
        idle
        drop
        t0="$(now)"
        sec_mount "$mnt" "$W/p6-cache"
        no_timing
        rec p6 mount secrate "$r" wall_s "$(since "$t0")" s
        head -c1 "$mnt/.history/$snap/d0050/f0500" >/dev/null
        rec p6 first_byte_total secrate "$r" wall_s "$(since "$t0")" s
        sec_umount "$mnt"
        # restic: cache removed, page cache dropped.
        rm -rf "$W/restic-cache"
        idle
        drop
        t0="$(now)"
        restic_mount_start "$W/p6-restic" "$W/r-mnt"
        bench_poll 600 head -c1 "$W/r-mnt/$rpath" || bench_log "warning: restic first byte timed out"
        no_timing
        rec p6 first_byte_total restic "$r" wall_s "$(since "$t0")" s
        restic_mount_stop
    done
    rm -rf "$W/p6-secrate" "$W/p6-restic" "$W/p6-cache" "$W/restic-cache"
}

# ---------------------------------------------------------------- P8
# The repository is made by `secrate backup` of the extracted tree (the
# snapshot's root is the tree's top directory) and restic's of the same.
# Each read starts from an empty secrate cache (or restic cache) with the
# page cache dropped after the mount; the mount itself is P6's. s3s-fs
# hashes the whole object (MD5, 68 % of its CPU) for every ranged GET, so
# the S3 case measures the test server as much as secrate: it takes 80 s
# for drivers/net and is left out of --quick.
w_p8() {
    linux_tar
    local r mnt="$W/s-mnt" rmnt="$W/r-mnt" snap="" list="$W/p8.md5" files where url
    files="$(wc -l <"$L_MD5")"
    no_timing
    rec p8 tree info 0 files "$files" files
    fresh_repo secrate "$W/p8-secrate"
    fresh_repo restic "$W/p8-restic"
    backup_tool secrate "$W/p8-secrate" "$(dirname "$L_SRC")" "$L_TOP" p8/build
    backup_tool restic "$W/p8-restic" "$(dirname "$L_SRC")" "$L_TOP" p8/build
    # The same list, relative to the snapshot's root.
    sed "s|  $L_TOP/|  |" "$L_MD5" >"$list"
    local stores=(file)
    if ((!quick)); then
        stores+=(s3)
        s3_server_install >>"$BENCH_LOG" 2>&1 || bench_die "cannot install the S3 test server (see $BENCH_LOG)"
        s3_server_start "$W" 2>>"$BENCH_LOG" || bench_die "cannot start the S3 test server (see $BENCH_LOG)"
        cp -a "$W/p8-secrate" "$S3_SERVER_ROOT/$S3_BUCKET/p8"
    fi
    for ((r = 1; r <= runs; r++)); do
        drop
        timed p8/plain/md5sum bash -c "cd '$(dirname "$L_SRC")' && md5sum -c --quiet '$L_MD5'"
        rec p8 read_snapshot plain "$r" wall_s "$BENCH_WALL" s
        for where in "${stores[@]}"; do
            url="file://$W/p8-secrate"
            [[ "$where" == file ]] || url="s3://$S3_BUCKET/p8"
            rm -rf "$W/p8-cache"
            mkdir -p "$mnt"
            _bench_add_mount "$mnt"
            env "SECRATE_STORE=$url" "$SECRATE" mount "$mnt" --cache "$W/p8-cache" --read-only \
                --snapshot-interval 0 --retention none -q >>"$BENCH_LOG" 2>&1 ||
                bench_die "secrate mount of $url failed (see $BENCH_LOG)"
            [[ -n "$snap" ]] || snap="$(find "$mnt/.history" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort | head -n 1)"
            drop
            timed "p8/secrate-$where/md5sum" bash -c "cd '$mnt/.history/$snap' && md5sum -c --quiet '$list'"
            rec p8 read_snapshot "secrate-$where" "$r" wall_s "$BENCH_WALL" s
            env "SECRATE_STORE=$url" "$SECRATE" umount -q "$mnt" >>"$BENCH_LOG" 2>&1 ||
                fusermount3 -uz "$mnt" 2>/dev/null || true
        done
        rm -rf "$W/restic-cache"
        restic_mount_start "$W/p8-restic" "$rmnt"
        bench_poll 300 test -d "$rmnt/snapshots/latest/$L_TOP" || bench_die "restic mount does not show $L_TOP"
        drop
        timed p8/restic/md5sum bash -c "cd '$rmnt/snapshots/latest' && md5sum -c --quiet '$L_MD5'"
        rec p8 read_snapshot restic "$r" wall_s "$BENCH_WALL" s
        restic_mount_stop
    done
    s3_server_stop
    rm -rf "$W/p8-secrate" "$W/p8-restic" "$W/p8-cache" "$W/restic-cache" "$list"
}

# ---------------------------------------------------------------- P7
w_p7() {
    local tree name r mnt="$W/s-mnt" pid files
    if ((quick)); then
        tree100k
        tree="$T100K"
    else
        tree1m
        tree="$T1M"
    fi
    name="$(basename "$tree")"
    files="$(find "$tree" -type f | wc -l)"
    no_timing
    rec p7 tree info 0 files "$files" files
    # One run: with 1M files restic's backup and the walk through its mount
    # take about 10 minutes.
    for ((r = 1; r <= 1; r++)); do
        # secrate backup, then a mount of it serving the tree.
        fresh_repo secrate "$W/p7-secrate"
        drop
        backup_tool secrate "$W/p7-secrate" "$(dirname "$tree")" "$name" p7/secrate/backup
        rec p7 backup secrate "$r" peak_rss_mib "$((BENCH_RSS_KB / 1024))" MiB
        rm -rf "$W/p7-cache"
        timed p7/secrate/mount sec_mount "$mnt" "$W/p7-cache"
        rec p7 mount_time secrate "$r" wall_s "$BENCH_WALL" s
        pid="$(sec_daemon_pid "$mnt")" || bench_die "no secrate daemon for $mnt"
        timed p7/secrate/walk bash -c "ls -lR '$mnt' >/dev/null"
        rec p7 walk_ls_lR secrate "$r" wall_s "$BENCH_WALL" s
        no_timing
        rec p7 mount_serving secrate "$r" peak_rss_mib "$(($(proc_peak_rss_kib "$pid") / 1024))" MiB
        sec_umount "$mnt"
        rm -rf "$W/p7-secrate" "$W/p7-cache"
        # restic backup, then restic mount.
        fresh_repo restic "$W/p7-restic"
        drop
        backup_tool restic "$W/p7-restic" "$(dirname "$tree")" "$name" p7/restic/backup
        rec p7 backup restic "$r" peak_rss_mib "$((BENCH_RSS_KB / 1024))" MiB
        restic_mount_start "$W/p7-restic" "$W/r-mnt"
        bench_poll 600 test -d "$W/r-mnt/snapshots/latest/$name" || bench_log "warning: restic mount not up"
        timed p7/restic/walk bash -c "ls -lR '$W/r-mnt/snapshots/latest/$name/' >/dev/null"
        rec p7 walk_ls_lR restic "$r" wall_s "$BENCH_WALL" s
        no_timing
        rec p7 mount_serving restic "$r" peak_rss_mib "$(($(proc_peak_rss_kib "$RESTIC_PID") / 1024))" MiB
        restic_mount_stop
        rm -rf "$W/p7-restic" "$W/restic-cache"
    done
}

# ---------------------------------------------------------------- history
w_history() {
    local n=1000 r mnt="$W/s-mnt" count
    S_STORE="$W/h-store"
    sec_init
    rm -rf "$W/h-cache" "$W/h-cache2"
    sec_mount "$mnt" "$W/h-cache"
    # SECRATE_STORE must be set for the child bash too.
    # shellcheck disable=SC2016 # expanded by the child bash
    timed history/create env "SECRATE_STORE=file://$S_STORE" SECRATE="$SECRATE" MNT="$mnt" N="$n" bash -c \
        'for ((i = 0; i < N; i++)); do echo "$i" >"$MNT/f"; "$SECRATE" snapshot --no-wait -q "$MNT" || exit 1; done'
    rec history create_1000_snapshots secrate 1 per_snapshot_ms "$(awk -v w="$BENCH_WALL" -v n="$n" 'BEGIN { printf "%.1f", 1000 * w / n }')" ms
    timed history/wait sec snapshot -q "$mnt"
    rec history wait_upload secrate 1 wall_s "$BENCH_WALL" s
    count="$(find "$mnt/.history" -mindepth 1 -maxdepth 1 | wc -l)"
    no_timing
    rec history entries secrate 1 count "$count" entries
    for ((r = 1; r <= 5; r++)); do
        timed history/ls bash -c "ls '$mnt/.history' >/dev/null"
        rec history ls_warm secrate "$r" wall_s "$BENCH_WALL" s
        timed history/ls-l bash -c "ls -l '$mnt/.history' >/dev/null"
        rec history ls_l_warm secrate "$r" wall_s "$BENCH_WALL" s
    done
    sec_umount "$mnt"
    for ((r = 1; r <= 3; r++)); do
        rm -rf "$W/h-cache2"
        drop
        timed history/mount sec_mount "$mnt" "$W/h-cache2"
        rec history mount_fresh_cache secrate "$r" wall_s "$BENCH_WALL" s
        timed history/ls-cold bash -c "ls '$mnt/.history' >/dev/null"
        rec history ls_cold secrate "$r" wall_s "$BENCH_WALL" s
        timed history/ls-l-cold bash -c "ls -l '$mnt/.history' >/dev/null"
        rec history ls_l_cold secrate "$r" wall_s "$BENCH_WALL" s
        sec_umount "$mnt"
    done
    rm -rf "$W/h-store" "$W/h-cache" "$W/h-cache2"
}

for wl in "${workloads[@]}"; do
    bench_log "=== workload $wl"
    t_wl="$(now)"
    "w_$wl"
    bench_log "=== workload $wl done in $(since "$t_wl") s"
done
bench_report "$OUT"
