#!/usr/bin/env bash
# Runs the whole check: cargo fmt --check, clippy with warnings denied, and
# every test target (unit, integration in tests/, mount tests) against a
# throwaway local S3 server.
#
#   scripts/test.sh                       # everything, as CI runs it
#   scripts/test.sh --quick [ARGS...]     # skip fmt and clippy
#   scripts/test.sh [--quick] store:: -- --nocapture
#                                         # remaining args go to cargo test
#
# Installs what is missing on a Debian machine (apt: fuse3, attr, git, sqlite3,
# tar, e2fsprogs; the S3 server s3s-fs into $SECRATE_TOOLS, default
# ~/.cache/secrate-tools). Mount tests need root, /dev/fuse and loop devices.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"

quick=0
cargo_test_args=()
while (($#)); do
    case "$1" in
    --quick) quick=1 ;;
    -h | --help)
        sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *) cargo_test_args+=("$1") ;;
    esac
    shift
done

export SECRATE_TOOLS="${SECRATE_TOOLS:-$HOME/.cache/secrate-tools}"
export S3_TOOLS="$SECRATE_TOOLS"
# shellcheck source=scripts/lib/s3-server.sh
source "$ROOT/scripts/lib/s3-server.sh"

started=$SECONDS
banner() {
    printf '\n==> %s  (%ds)\n' "$*" "$((SECONDS - started))" >&2
}

as_root() {
    if ((EUID == 0)); then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "test.sh: need root to run: $*" >&2
        return 1
    fi
}

# --- system packages ------------------------------------------------------
missing=()
command -v fusermount3 >/dev/null 2>&1 || missing+=(fuse3)
command -v setfattr >/dev/null 2>&1 || missing+=(attr)
# Real programs the mount tests run inside the mount.
command -v git >/dev/null 2>&1 || missing+=(git)
command -v sqlite3 >/dev/null 2>&1 || missing+=(sqlite3)
command -v tar >/dev/null 2>&1 || missing+=(tar)
# A cache disk in an ext4 image whose power a crash test cuts.
command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)
if ((${#missing[@]})); then
    banner "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends "${missing[@]}"
fi
if ((EUID != 0)) || [[ ! -c /dev/fuse ]]; then
    echo "test.sh: warning: not root or no /dev/fuse: mount tests cannot mount here" >&2
fi

# --- Rust components --------------------------------------------------------
if ((!quick)); then
    for comp in rustfmt clippy; do
        if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
            banner "rustup component add $comp"
            rustup component add "$comp"
        fi
    done
fi

# --- S3 server --------------------------------------------------------------
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    s3_server_stop || true
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

banner "S3 test server (s3s-fs $S3S_FS_VERSION)"
s3_server_install
s3_server_start "${TMPDIR:-/tmp}"

# --- checks -----------------------------------------------------------------
if ((!quick)); then
    banner "cargo fmt --check"
    cargo fmt --check || {
        echo "test.sh: formatting differs (see above); run cargo fmt" >&2
        exit 1
    }
    banner "cargo clippy --all-targets -- -D warnings"
    cargo clippy --all-targets -- -D warnings
fi

banner "cargo test --all-targets ${cargo_test_args[*]-}"
cargo test --all-targets "${cargo_test_args[@]}" || {
    rc=$?
    if [[ -n "$S3_SERVER_PID" ]] && ! kill -0 "$S3_SERVER_PID" 2>/dev/null; then
        echo "test.sh: the S3 server died during the tests; its log:" >&2
        sed 's/^/  | /' "$S3_SERVER_LOG" >&2 || true
    fi
    exit "$rc"
}

# Every decoder under libFuzzer for 10 s each (docs/RELIABILITY.md); not
# with --quick.
if ((!quick)); then
    banner "scripts/fuzz.sh --ci"
    "$ROOT/scripts/fuzz.sh" --ci
fi

banner "all checks passed"
