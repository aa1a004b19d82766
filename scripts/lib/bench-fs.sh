# shellcheck shell=bash
# Filesystem and peer helpers for scripts/bench.sh (source after
# bench-common.sh). Everything mounted here is recorded and unmounted by
# bench_fs_cleanup (run it from an EXIT trap); processes started here are
# stopped by their pid only.
#
# Expects: W (work dir), SECRATE (binary), BENCH_LOG.
#
#   sec ARGS...              secrate with SECRATE_STORE=file://$S_STORE
#   sec_init                 fresh secrate store at $S_STORE
#   sec_mount MNT CACHE      mount it (no automatic snapshots, keep all)
#   sec_umount MNT           secrate umount (lazy fusermount3 -uz if it fails)
#   sec_daemon_pid MNT       pid of the daemon serving MNT
#   gc_init / gc_mount MNT / gc_umount MNT   gocryptfs at $W/gc-cipher
#   ex_mount BIN MNT / ex_umount MNT   a FUSE filesystem from examples/
#                            (nullfs: no-op, $NULLFS; memfs: in memory,
#                            $MEMFS) served in the background
#   restic_mount_start REPO MNT   restic mount in the background (RESTIC_PID)
#   restic_mount_stop        stop it (SIGINT, then fusermount3 -u)
#   proc_peak_rss_kib PID    VmHWM of PID in KiB
#   bench_fs_cleanup         unmount and stop everything still up

BENCH_MOUNTS=()
RESTIC_PID=""
RESTIC_MNT=""
EX_PID=""
S_STORE="${S_STORE:-$W/s-store}"
export SECRATE_PASSPHRASE="bench-passphrase"
export RESTIC_PASSWORD="bench-passphrase"
export BORG_PASSPHRASE="bench-passphrase"
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes

sec() { env "SECRATE_STORE=file://$S_STORE" "$SECRATE" "$@"; }

sec_init() {
    rm -rf "$S_STORE"
    sec init --kdf-work-factor 10 -q >>"$BENCH_LOG" 2>&1 || bench_die "secrate init failed (see $BENCH_LOG)"
}

_bench_add_mount() {
    local m
    for m in "${BENCH_MOUNTS[@]}"; do [[ "$m" == "$1" ]] && return 0; done
    BENCH_MOUNTS+=("$1")
}

sec_mount() {
    local mnt="$1" cache="$2"
    mkdir -p "$mnt" "$cache"
    _bench_add_mount "$mnt"
    sec mount "$mnt" --cache "$cache" --snapshot-interval 0 --retention none -q >>"$BENCH_LOG" 2>&1 ||
        bench_die "secrate mount $mnt failed (see $BENCH_LOG and $cache/mount.log)"
}

sec_umount() {
    local mnt="$1"
    if ! timeout 1800 env "SECRATE_STORE=file://$S_STORE" "$SECRATE" umount -q "$mnt" >>"$BENCH_LOG" 2>&1; then
        bench_log "warning: secrate umount $mnt failed; lazy unmount"
        fusermount3 -uz "$mnt" 2>/dev/null || true
    fi
}

sec_daemon_pid() {
    local mnt="$1" p cl
    for p in /proc/[0-9]*; do
        cl="$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null)" || continue
        if [[ "$cl" == *" mount $mnt "* && "$cl" == *--daemon-child* ]]; then
            echo "${p#/proc/}"
            return 0
        fi
    done
    return 1
}

proc_peak_rss_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo ""; }

gc_init() {
    rm -rf "$W/gc-cipher"
    mkdir -p "$W/gc-cipher"
    printf 'bench-passphrase\n' >"$W/gc-pass"
    gocryptfs -q -init -scryptn 10 -passfile "$W/gc-pass" "$W/gc-cipher" >>"$BENCH_LOG" 2>&1 ||
        bench_die "gocryptfs -init failed (see $BENCH_LOG)"
}

gc_mount() {
    mkdir -p "$1"
    _bench_add_mount "$1"
    gocryptfs -q -passfile "$W/gc-pass" "$W/gc-cipher" "$1" >>"$BENCH_LOG" 2>&1 ||
        bench_die "gocryptfs mount failed (see $BENCH_LOG)"
}

gc_umount() { fusermount3 -u "$1" 2>/dev/null || fusermount3 -uz "$1" 2>/dev/null || true; }

# The example filesystems serve in the foreground: start one in the
# background and wait until the mount is there. fusermount3 -u ends it.
ex_mount() {
    mkdir -p "$2"
    _bench_add_mount "$2"
    "$1" "$2" >>"$BENCH_LOG" 2>&1 &
    EX_PID=$!
    bench_poll 10 mountpoint -q "$2" || bench_die "$1 did not mount at $2 (see $BENCH_LOG)"
}

ex_umount() {
    fusermount3 -u "$1" 2>/dev/null || fusermount3 -uz "$1" 2>/dev/null || true
    [[ -z "$EX_PID" ]] || wait "$EX_PID" 2>/dev/null || true
    EX_PID=""
}

# restic mount runs in the foreground: start it in the background and
# remember its pid. The caller polls for what it wants to read.
restic_mount_start() {
    local repo="$1" mnt="$2"
    mkdir -p "$mnt"
    _bench_add_mount "$mnt"
    RESTIC_MNT="$mnt"
    restic mount --repo "$repo" --cache-dir "$W/restic-cache" --no-lock "$mnt" >>"$BENCH_LOG" 2>&1 &
    RESTIC_PID=$!
}

restic_mount_stop() {
    [[ -n "$RESTIC_PID" ]] || return 0
    kill -INT "$RESTIC_PID" 2>/dev/null || true
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$RESTIC_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$RESTIC_PID" 2>/dev/null && kill -KILL "$RESTIC_PID" 2>/dev/null
    wait "$RESTIC_PID" 2>/dev/null || true
    mountpoint -q "$RESTIC_MNT" && { fusermount3 -u "$RESTIC_MNT" 2>/dev/null || fusermount3 -uz "$RESTIC_MNT" 2>/dev/null || true; }
    RESTIC_PID=""
}

# Wait until CMD succeeds (polling every 10 ms), at most SECONDS.
bench_poll() {
    local max="$1" t0
    shift
    t0="$(date +%s)"
    until "$@" >/dev/null 2>&1; do
        (($(date +%s) - t0 > max)) && return 1
        sleep 0.01
    done
}

bench_fs_cleanup() {
    local m
    restic_mount_stop || true
    for m in "${BENCH_MOUNTS[@]}"; do
        mountpoint -q "$m" 2>/dev/null || continue
        bench_log "cleanup: unmounting $m"
        if [[ -e "$m/.history" ]]; then
            timeout 300 env "SECRATE_STORE=file://$S_STORE" "$SECRATE" umount -q "$m" >>"$BENCH_LOG" 2>&1 || true
        fi
        mountpoint -q "$m" 2>/dev/null && { fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null || true; }
    done
    return 0
}
