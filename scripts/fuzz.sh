#!/usr/bin/env bash
# Fuzzes every decoder: the cargo-fuzz targets in fuzz/ (docs/RELIABILITY.md,
# "Fuzzing").
#
#   scripts/fuzz.sh --ci                 # each target 10 s from fuzz/seeds (CI)
#   scripts/fuzz.sh --time 3600          # each target an hour, fuzz/corpus kept
#   scripts/fuzz.sh --time 600 tree pack_file [-- LIBFUZZER-ARGS...]
#   scripts/fuzz.sh --jobs 1 ...         # targets at once (default: all cores)
#   scripts/fuzz.sh --repro TARGET FILE  # run one input, with a backtrace
#   scripts/fuzz.sh --list | --build
#
# Exits non-zero if a target finds a crash (panic, overflow, OOM, timeout,
# sanitizer report), printing the input's path under fuzz/artifacts/. Installs
# cargo-fuzz into $SECRATE_TOOLS (default ~/.cache/secrate-tools) if missing;
# builds there too (fuzz-target/), with RUSTC_BOOTSTRAP=1 on stable Rust.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
FUZZ="$ROOT/fuzz"

SECRATE_TOOLS="${SECRATE_TOOLS:-$HOME/.cache/secrate-tools}"
CARGO_FUZZ_VERSION="${CARGO_FUZZ_VERSION:-0.13.2}"
# Outside the work tree so that every clone on this machine (CI's too)
# reuses one build of the instrumented dependencies.
TARGET_DIR="${SECRATE_FUZZ_TARGET_DIR:-$SECRATE_TOOLS/fuzz-target}"

mode=""
secs=""
jobs="$(nproc 2>/dev/null || echo 1)"
targets=()
extra=()
repro=()
while (($#)); do
    case "$1" in
    --ci) mode=ci ;;
    --time)
        mode=long
        secs="${2:?--time needs seconds}"
        shift
        ;;
    --jobs)
        jobs="${2:?--jobs needs a number}"
        shift
        ;;
    --repro)
        mode=repro
        repro=("${2:?--repro needs TARGET FILE}" "${3:?--repro needs TARGET FILE}")
        shift 2
        ;;
    --list) mode=list ;;
    --build) mode=build ;;
    -h | --help)
        sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    --)
        shift
        extra=("$@")
        break
        ;;
    -*)
        echo "fuzz.sh: unknown option $1 (see --help)" >&2
        exit 2
        ;;
    *) targets+=("$1") ;;
    esac
    shift
done
if [[ -z "$mode" ]]; then
    echo "fuzz.sh: say --ci, --time SECS, --repro, --list or --build (see --help)" >&2
    exit 2
fi
[[ "$secs" =~ ^[0-9]+$ ]] || [[ "$mode" != long ]] || {
    echo "fuzz.sh: --time takes whole seconds" >&2
    exit 2
}
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || {
    echo "fuzz.sh: --jobs takes a positive number" >&2
    exit 2
}

all_targets=()
for f in "$FUZZ"/fuzz_targets/*.rs; do
    all_targets+=("$(basename "$f" .rs)")
done
if [[ "$mode" == list ]]; then
    printf '%s\n' "${all_targets[@]}"
    exit 0
fi
[[ "$mode" != repro ]] || targets=("${repro[0]}")
((${#targets[@]})) || targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
    [[ -f "$FUZZ/fuzz_targets/$t.rs" ]] || {
        echo "fuzz.sh: no target $t (scripts/fuzz.sh --list)" >&2
        exit 2
    }
done

log() { printf '==> %s\n' "$*" >&2; }

# --- cargo-fuzz ---------------------------------------------------------------
export PATH="$SECRATE_TOOLS/bin:$PATH"
if ! grep -qF "\"cargo-fuzz $CARGO_FUZZ_VERSION " "$SECRATE_TOOLS/.crates.toml" 2>/dev/null ||
    [[ ! -x "$SECRATE_TOOLS/bin/cargo-fuzz" ]]; then
    log "cargo install cargo-fuzz $CARGO_FUZZ_VERSION into $SECRATE_TOOLS (takes a few minutes)"
    mkdir -p "$SECRATE_TOOLS"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$SECRATE_TOOLS"
fi

# --- build ----------------------------------------------------------------------
# cargo-fuzz needs nightly flags (-Zsanitizer=address, sancov passes); stable
# rustc accepts them with RUSTC_BOOTSTRAP=1. Release with debug assertions and
# overflow checks, AddressSanitizer (so that libFuzzer's -malloc_limit_mb
# catches a single huge allocation), line tables for backtraces.
export RUSTC_BOOTSTRAP=1
started=$SECONDS
log "cargo fuzz build (target dir $TARGET_DIR)"
cargo fuzz build --fuzz-dir "$FUZZ" --target-dir "$TARGET_DIR"
log "built in $((SECONDS - started)) s"
[[ "$mode" != build ]] || exit 0

triple="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="$TARGET_DIR/$triple/release"
export RUST_BACKTRACE=1

# --- one input --------------------------------------------------------------------
if [[ "$mode" == repro ]]; then
    exec "$bin_dir/${repro[0]}" "${extra[@]}" "${repro[1]}"
fi

# --- fuzzing ------------------------------------------------------------------------
if [[ "$mode" == ci ]]; then
    secs=10
    # A fresh corpus each run, grown from the committed seeds only: CI
    # results do not depend on what earlier runs left behind.
    corpus_root="$(mktemp -d "${TMPDIR:-/tmp}/secrate-fuzz.XXXXXX")"
    trap 'rm -rf "$corpus_root"' EXIT
else
    corpus_root="$FUZZ/corpus"
fi

run_target() {
    local t="$1" corpus="$corpus_root/$1" art="$FUZZ/artifacts/$1"
    mkdir -p "$corpus" "$art"
    # Seeds are read, never written: new inputs go to the first directory.
    "$bin_dir/$t" "$corpus" "$FUZZ/seeds/$t" \
        -max_total_time="$secs" -timeout=30 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$art/" "${extra[@]}" \
        >"$art/fuzz.log" 2>&1 && rc=0 || rc=$?
    echo "$rc" >"$art/fuzz.rc"
}

log "fuzzing ${#targets[@]} targets, ${secs} s each, $jobs at a time"
for t in "${targets[@]}"; do
    rm -f "$FUZZ/artifacts/$t/fuzz.rc"
    while (($(jobs -rp | wc -l) >= jobs)); do
        wait -n || true
    done
    run_target "$t" &
done
wait

final_stat() { sed -n "s/^stat::$1: *//p" "$2" | tail -1; }
failed=()
total=0
printf '%-16s %12s %10s %8s  %s\n' target execs execs/s corpus result
for t in "${targets[@]}"; do
    art="$FUZZ/artifacts/$t"
    rc="$(cat "$art/fuzz.rc" 2>/dev/null || echo '?')"
    execs="$(final_stat number_of_executed_units "$art/fuzz.log")"
    rate="$(final_stat average_exec_per_sec "$art/fuzz.log")"
    units="$(find "$corpus_root/$t" -type f | wc -l)"
    total=$((total + ${execs:-0}))
    result=ok
    [[ "$rc" == 0 ]] || {
        result="FAILED (exit $rc)"
        failed+=("$t")
    }
    printf '%-16s %12s %10s %8s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "$units" "$result"
done
printf '%-16s %12s\n' total "$total"

for t in "${failed[@]}"; do
    art="$FUZZ/artifacts/$t"
    echo
    echo "---- $t: last lines of $art/fuzz.log"
    tail -n 60 "$art/fuzz.log" | sed 's/^/  | /'
    sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$art/fuzz.log" | while read -r input; do
        echo "fuzz.sh: $t crashed on $input"
        echo "  reproduce: scripts/fuzz.sh --repro $t $input"
    done
done
if ((${#failed[@]})); then
    echo "fuzz.sh: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
    exit 1
fi
log "no crashes ($((SECONDS - started)) s in all)"
