#!/usr/bin/env bash
# The long crash loop (docs/RELIABILITY.md, "Crashes"): mount-tests/crash.rs
# with many kills, in release mode.
#
#   scripts/crash-loop.sh                   # 100 kills per store, file:// only
#   scripts/crash-loop.sh --cycles 500 --s3 # 500 kills, file:// and a local S3 server
#   scripts/crash-loop.sh --seed 1234       # replay a run (the seed is printed)
#   scripts/crash-loop.sh --backup-mb 1000  # the backup test on a 1 GB tree
#   scripts/crash-loop.sh --only mount      # only the mount test (or: backup)
#
# Needs root and /dev/fuse. Prints the figures of each store at the end
# (lines starting with FIGURES).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"

cycles=100
s3=0
only=""
while (($#)); do
    case "$1" in
    --cycles) cycles="$2"; shift ;;
    --s3) s3=1 ;;
    --seed) export SECRATE_CRASH_SEED="$2"; shift ;;
    --backup-mb) export SECRATE_CRASH_BACKUP_MB="$2"; shift ;;
    --only)
        case "$2" in
        mount) only=mount_survives_kill_9 ;;
        backup) only=backup_survives_kill_9 ;;
        *) echo "crash-loop.sh: --only mount|backup" >&2; exit 2 ;;
        esac
        shift
        ;;
    -h | --help)
        sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *) echo "crash-loop.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
export SECRATE_CRASH_CYCLES="$cycles"

if ((s3)); then
    export SECRATE_TOOLS="${SECRATE_TOOLS:-$HOME/.cache/secrate-tools}"
    export S3_TOOLS="$SECRATE_TOOLS"
    # shellcheck source=scripts/lib/s3-server.sh
    source "$ROOT/scripts/lib/s3-server.sh"
    cleanup() {
        local rc=$?
        trap - EXIT INT TERM
        s3_server_stop || true
        exit "$rc"
    }
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    s3_server_install
    s3_server_start "${TMPDIR:-/tmp}"
else
    unset SECRATE_TEST_S3_URL
fi

started=$SECONDS
log="$(mktemp "${TMPDIR:-/tmp}/secrate-crash-loop.XXXXXX")"
echo "crash-loop: $cycles kills per store$( ((s3)) && echo ', file:// and s3://'); log $log" >&2
rc=0
cargo test --release --test crash -- --nocapture --test-threads 1 ${only:+"$only"} 2>&1 | tee "$log" || rc=$?
echo >&2
grep '^FIGURES' "$log" >&2 || true
echo "crash-loop: $((SECONDS - started)) s, exit $rc" >&2
if mount | grep -q 'secrate'; then
    echo "crash-loop: warning: secrate mounts are left:" >&2
    mount | grep secrate >&2
    rc=1
fi
exit "$rc"
