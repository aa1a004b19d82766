# shellcheck shell=bash
# A throwaway S3-compatible server (s3s-fs) for tests and benchmarks.
#
# Source this file, then:
#
#   s3_server_install          # cargo install s3s-fs into $S3_TOOLS if missing
#   s3_server_start [PARENT]   # start it on 127.0.0.1, export AWS_* for it
#   trap s3_server_stop EXIT   # the caller owns the trap
#   ...
#   s3_server_stop             # stop it and remove its temp dir (idempotent)
#
# s3_server_start creates a fresh temp dir (under PARENT, default $TMPDIR or
# /tmp) holding the server's root directory and its log, creates the bucket
# $S3_BUCKET (a bucket is a subdirectory of the root), and exports
#
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY   random, fresh for each start
#   AWS_ENDPOINT_URL=http://127.0.0.1:PORT, AWS_ALLOW_HTTP=true,
#   AWS_REGION=us-east-1, SECRATE_TEST_S3_URL=s3://$S3_BUCKET
#
# and sets S3_SERVER_PID, S3_SERVER_PORT, S3_SERVER_DIR (the temp dir),
# S3_SERVER_ROOT (the server's root dir: objects appear under
# $S3_SERVER_ROOT/$S3_BUCKET/...) and S3_SERVER_LOG.
#
# Works under `set -euo pipefail`. Needs bash, python3 (optional: only to
# pick a free port) and a Rust toolchain for the one-time install.

S3_TOOLS="${S3_TOOLS:-${SECRATE_TOOLS:-$HOME/.cache/secrate-tools}}"
S3S_FS_VERSION="${S3S_FS_VERSION:-0.14.1}"
S3_BUCKET="${S3_BUCKET:-secrate-test}"
S3_SERVER_PID=""
S3_SERVER_PORT=""
S3_SERVER_DIR=""
S3_SERVER_ROOT=""
S3_SERVER_LOG=""

_s3_log() { echo "s3-server: $*" >&2; }

# The installed binary, pinned: newer s3s-fs releases need a newer Rust.
s3_server_bin() { echo "$S3_TOOLS/bin/s3s-fs"; }

s3_server_install() {
    local bin
    bin="$(s3_server_bin)"
    # cargo records what it installed under --root in .crates.toml.
    if [[ -x "$bin" ]] &&
        grep -qF "\"s3s-fs $S3S_FS_VERSION " "$S3_TOOLS/.crates.toml" 2>/dev/null; then
        return 0
    fi
    _s3_log "installing s3s-fs $S3S_FS_VERSION into $S3_TOOLS (takes a few minutes)"
    mkdir -p "$S3_TOOLS"
    if ! cargo install s3s-fs --version "$S3S_FS_VERSION" --features binary --locked \
        --root "$S3_TOOLS"; then
        _s3_log "cargo install s3s-fs $S3S_FS_VERSION failed"
        return 1
    fi
}

# Prints a TCP port that nothing listens on right now.
_s3_free_port() {
    local port
    if command -v python3 >/dev/null 2>&1 &&
        port="$(python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])' 2>/dev/null)" && [[ -n "$port" ]]; then
        echo "$port"
        return 0
    fi
    for _ in $(seq 1 100); do
        port=$((20000 + RANDOM % 40000))
        if ! _s3_port_open "$port"; then
            echo "$port"
            return 0
        fi
    done
    _s3_log "found no free port"
    return 1
}

# True if something accepts connections on 127.0.0.1:$1.
_s3_port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

_s3_random_hex() {
    od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'
}

s3_server_start() {
    local parent="${1:-${TMPDIR:-/tmp}}"
    local bin key secret attempt deadline
    bin="$(s3_server_bin)"
    if [[ ! -x "$bin" ]]; then
        _s3_log "$bin is missing; run s3_server_install first"
        return 1
    fi
    if [[ -n "$S3_SERVER_PID" ]]; then
        _s3_log "already running (pid $S3_SERVER_PID)"
        return 1
    fi

    S3_SERVER_DIR="$(mktemp -d "$parent/secrate-s3.XXXXXX")"
    S3_SERVER_ROOT="$S3_SERVER_DIR/root"
    S3_SERVER_LOG="$S3_SERVER_DIR/s3s-fs.log"
    mkdir -p "$S3_SERVER_ROOT/$S3_BUCKET"
    key="secrate$(_s3_random_hex 8)"
    secret="$(_s3_random_hex 20)"

    # The port is free when picked but may be taken before the server binds
    # it: if the server dies early, try again on another port.
    for attempt in 1 2 3; do
        S3_SERVER_PORT="$(_s3_free_port)"
        # Asynchronous commands of a non-interactive shell ignore SIGINT, so
        # a Ctrl-C reaches the caller, whose trap then stops the server.
        "$bin" --host 127.0.0.1 --port "$S3_SERVER_PORT" \
            --access-key "$key" --secret-key "$secret" \
            "$S3_SERVER_ROOT" >>"$S3_SERVER_LOG" 2>&1 </dev/null &
        S3_SERVER_PID=$!
        deadline=$((SECONDS + 30))
        while ((SECONDS < deadline)); do
            if ! kill -0 "$S3_SERVER_PID" 2>/dev/null; then
                break
            fi
            if _s3_port_open "$S3_SERVER_PORT"; then
                break
            fi
            sleep 0.1
        done
        if kill -0 "$S3_SERVER_PID" 2>/dev/null && _s3_port_open "$S3_SERVER_PORT"; then
            break
        fi
        if kill -0 "$S3_SERVER_PID" 2>/dev/null; then
            _s3_log "s3s-fs did not accept connections on 127.0.0.1:$S3_SERVER_PORT within 30 s; its log:"
            sed 's/^/  | /' "$S3_SERVER_LOG" >&2 || true
            s3_server_stop
            return 1
        fi
        wait "$S3_SERVER_PID" 2>/dev/null || true
        S3_SERVER_PID=""
        _s3_log "s3s-fs exited at start (attempt $attempt, port $S3_SERVER_PORT)"
        if ((attempt == 3)); then
            _s3_log "giving up; its log:"
            sed 's/^/  | /' "$S3_SERVER_LOG" >&2 || true
            s3_server_stop
            return 1
        fi
    done

    # Settings that would send the client elsewhere or sign differently.
    unset AWS_SESSION_TOKEN AWS_TOKEN AWS_PROFILE AWS_DEFAULT_REGION \
        AWS_ENDPOINT_URL_S3 AWS_ENDPOINT AWS_VIRTUAL_HOSTED_STYLE_REQUEST \
        AWS_SKIP_SIGNATURE AWS_S3_EXPRESS AWS_CONDITIONAL_PUT \
        AWS_COPY_IF_NOT_EXISTS AWS_REQUEST_PAYER AWS_BUCKET AWS_BUCKET_NAME \
        AWS_CONTAINER_CREDENTIALS_RELATIVE_URI AWS_CONTAINER_CREDENTIALS_FULL_URI \
        AWS_WEB_IDENTITY_TOKEN_FILE AWS_ROLE_ARN
    export AWS_ACCESS_KEY_ID="$key"
    export AWS_SECRET_ACCESS_KEY="$secret"
    export AWS_ENDPOINT_URL="http://127.0.0.1:$S3_SERVER_PORT"
    export AWS_ALLOW_HTTP=true
    export AWS_REGION=us-east-1
    export SECRATE_TEST_S3_URL="s3://$S3_BUCKET"
    # Never reach the local server through a proxy.
    export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
    export no_proxy="$NO_PROXY"
    _s3_log "s3s-fs $S3S_FS_VERSION on $AWS_ENDPOINT_URL (pid $S3_SERVER_PID), bucket $S3_BUCKET under $S3_SERVER_ROOT"
}

# Stops the server (TERM, then KILL after 5 s) and removes its temp dir.
# Safe to call more than once and when nothing was started.
s3_server_stop() {
    local pid="$S3_SERVER_PID"
    S3_SERVER_PID=""
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    if [[ -n "$pid" ]]; then
        wait "$pid" 2>/dev/null || true
    fi
    if [[ -n "$S3_SERVER_DIR" && -d "$S3_SERVER_DIR" ]]; then
        rm -rf -- "$S3_SERVER_DIR"
    fi
    S3_SERVER_DIR=""
}
