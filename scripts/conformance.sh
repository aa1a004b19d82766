#!/usr/bin/env bash
# POSIX conformance: runs pjdfstest (the Rust port, 398 tests) on a plain
# directory and on a fresh secrate mount (file:// store) side by side, saves
# both outputs and prints the differences: every test that passes on the
# plain directory but not on secrate.
#
#   scripts/conformance.sh                  # build secrate, run both, compare
#   scripts/conformance.sh --out DIR        # outputs (and the store) in DIR
#                                           # (default target/conformance)
#   scripts/conformance.sh --install-only   # install pjdfstest and the users, nothing else
#   scripts/conformance.sh chmod rename     # only tests whose names match
#
# Environment: SECRATE_BIN (the secrate binary; default: cargo build, then
# target/debug/secrate), SECRATE_TOOLS (where pjdfstest is installed,
# default ~/.cache/secrate-tools), TMPDIR (the plain directory's parent).
#
# Needs root (pjdfstest switches users, creates devices; the mount is root's
# with allow_other) and /dev/fuse. Creates the users `tests` and `nobody` if
# missing. Installs pjdfstest 0.2.2 with `cargo install --locked` once (~1 min).
#
# Output files in the out dir: plain.out and secrate.out (pjdfstest's full
# output), plain.results and secrate.results (`name status`, sorted),
# differences (`name plain=STATUS secrate=STATUS` for every test whose
# status differs), secrate-worse (names that pass on plain but not on
# secrate), pjdfstest.toml (the configuration used), store/ (the repository).
#
# Exit: 0 when both runs completed and secrate passes everything plain
# passes; 1 when there are such differences; 2 when something could not run.
set -euo pipefail
export LC_ALL=C

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${SECRATE_TOOLS:-$HOME/.cache/secrate-tools}"
PJDFSTEST_VERSION=0.2.2
PJDFSTEST="$TOOLS/bin/pjdfstest"

out=""
install_only=0
patterns=()
while (($#)); do
    case "$1" in
    --out)
        out="$2"
        shift
        ;;
    --install-only) install_only=1 ;;
    -h | --help)
        sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *) patterns+=("$1") ;;
    esac
    shift
done

say() { echo "conformance: $*" >&2; }
die() {
    say "$*"
    exit 2
}

((EUID == 0)) || die "needs root (pjdfstest switches users and creates devices)"

# --- pjdfstest and its users ------------------------------------------------
if [[ ! -x "$PJDFSTEST" ]] ||
    ! grep -qF "\"pjdfstest $PJDFSTEST_VERSION " "$TOOLS/.crates.toml" 2>/dev/null; then
    say "installing pjdfstest $PJDFSTEST_VERSION into $TOOLS (about a minute)"
    mkdir -p "$TOOLS"
    # A lock: several test processes may install at once.
    (
        flock 9
        if [[ ! -x "$PJDFSTEST" ]] ||
            ! grep -qF "\"pjdfstest $PJDFSTEST_VERSION " "$TOOLS/.crates.toml" 2>/dev/null; then
            cargo install pjdfstest --version "$PJDFSTEST_VERSION" --locked --root "$TOOLS" >&2
        fi
    ) 9>"$TOOLS/.pjdfstest.lock" || die "cargo install pjdfstest $PJDFSTEST_VERSION failed"
fi
id -u nobody >/dev/null 2>&1 || useradd -M -r -s /usr/sbin/nologin nobody
if ! id -u tests >/dev/null 2>&1; then
    groupadd -f tests
    useradd -M -g tests -s /usr/sbin/nologin tests
fi
groupadd -f tests
((install_only)) && exit 0

command -v fusermount3 >/dev/null 2>&1 || die "fusermount3 is missing (apt-get install fuse3)"
[[ -c /dev/fuse ]] || die "/dev/fuse is missing"

# --- secrate ----------------------------------------------------------------
bin="${SECRATE_BIN:-}"
if [[ -z "$bin" ]]; then
    (cd "$ROOT" && cargo build --quiet) || die "cargo build failed"
    bin="$ROOT/target/debug/secrate"
fi
[[ -x "$bin" ]] || die "$bin is not executable"

# --- work directories ---------------------------------------------------------
work="$(mktemp -d "${TMPDIR:-/tmp}/secrate-conformance.XXXXXX")"
# The dummy users must reach the test directories.
chmod 755 "$work"
out="${out:-$ROOT/target/conformance}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
mnt="$work/mnt"
cache="$work/cache"
plain="$work/plain"
mkdir -p "$mnt" "$plain"
export SECRATE_PASSPHRASE="conformance"
export SECRATE_STORE="file://$out/store"
rm -rf "$out/store"
unset SECRATE_RECOVERY_KEY

mounted=0
# shellcheck disable=SC2317 # called by the traps
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if ((mounted)) && mountpoint -q "$mnt"; then
        "$bin" umount "$mnt" >/dev/null 2>&1 || fusermount3 -uz "$mnt" 2>/dev/null || umount -l "$mnt" || true
    fi
    # The serving process exits after its last upload; wait for it.
    if [[ -f "$cache/lock" ]]; then
        local pid
        pid="$(cat "$cache/lock" 2>/dev/null || true)"
        local n=0
        while [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && ((n++ < 600)); do
            sleep 0.1
        done
    fi
    mountpoint -q "$mnt" || rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Every opt-in feature Linux has; naptime above the timestamp granularity
# of both (nanoseconds).
nobody_group="$(id -gn nobody)"
cat >"$out/pjdfstest.toml" <<EOF
[features]
posix_fallocate = {}
utimensat = {}
utime_now = {}
rename_ctime = {}

[settings]
naptime = 0.01
allow_remount = false

[dummy_auth]
entries = [
  ["nobody", "$nobody_group"],
  ["tests", "tests"],
]
EOF

# A second filesystem for the EXDEV tests: anything on another device.
secondary_for() {
    local dir="$1" cand
    for cand in /dev/shm "$plain"; do
        if [[ -d "$cand" && -w "$cand" ]] &&
            [[ "$(stat -c %d "$cand")" != "$(stat -c %d "$dir")" ]]; then
            mkdir -p "$cand/secrate-conformance-$$"
            echo "$cand/secrate-conformance-$$"
            return
        fi
    done
}

# run NAME DIR: pjdfstest on DIR into $out/NAME.out and $out/NAME.results.
run() {
    local name="$1" dir="$2" sec args=() t0=$SECONDS
    sec="$(secondary_for "$dir")"
    [[ -n "$sec" ]] && args+=(-s "$sec")
    # pjdfstest exits 1 when tests fail, and may panic after its summary on
    # FUSE mounts: the summary line is what counts.
    (cd "$dir" && timeout 600 "$PJDFSTEST" -c "$out/pjdfstest.toml" -p "$dir" "${args[@]}" \
        "${patterns[@]}") >"$out/$name.out" 2>&1 || true
    [[ -n "$sec" ]] && rm -rf "$sec"
    grep -q '^Summary:' "$out/$name.out" || {
        say "pjdfstest on $name did not finish; last lines of its output:"
        tail -20 "$out/$name.out" | sed 's/^/  | /' >&2
        exit 2
    }
    # `name<spaces>ok|FAILED|skipped|...`, one line per test.
    sed -nE 's/^([a-z0-9_:]+) +(ok|FAILED|skipped|expected failure|unexpected success)$/\1 \2/p' \
        "$out/$name.out" | sed 's/ expected failure$/ expected-failure/; s/ unexpected success$/ unexpected-success/' |
        sort >"$out/$name.results"
    say "$name ($((SECONDS - t0)) s): $(grep '^Summary:' "$out/$name.out")"
}

run plain "$plain"

"$bin" init --kdf-work-factor 10 >/dev/null || die "secrate init failed"
"$bin" mount "$mnt" --cache "$cache" --snapshot-interval 0 --allow-other --quiet >&2 ||
    die "secrate mount failed: $(cat "$cache/mount.log" 2>/dev/null)"
mounted=1
mkdir "$mnt/pjdfstest"
chmod 755 "$mnt/pjdfstest"
run secrate "$mnt/pjdfstest"
# Everything pjdfstest left behind (devices, fifos, sockets, odd modes)
# must seal and upload.
"$bin" snapshot "$mnt" >/dev/null || die "secrate snapshot failed after pjdfstest"
"$bin" umount "$mnt" >/dev/null || die "secrate umount failed: $(tail -20 "$cache/mount.log")"
mounted=0
cp "$cache/mount.log" "$out/mount.log" 2>/dev/null || true

join -a1 -a2 -e missing -o 0,1.2,2.2 "$out/plain.results" "$out/secrate.results" |
    awk '$2 != $3 { print $1, "plain=" $2, "secrate=" $3 }' >"$out/differences"
awk '$2 == "plain=ok" { print $1 }' "$out/differences" >"$out/secrate-worse"

echo "plain:   $(grep '^Summary:' "$out/plain.out")"
echo "secrate: $(grep '^Summary:' "$out/secrate.out")"
if [[ -s "$out/differences" ]]; then
    echo "differences (test, status on plain, status on secrate):"
    sed 's/^/  /' "$out/differences"
else
    echo "no differences"
fi
echo "outputs in $out"
[[ -s "$out/secrate-worse" ]] && exit 1
exit 0
