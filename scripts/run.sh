#!/usr/bin/env bash
# Sets up secrate and mounts it: the README's first command.
#
#   scripts/run.sh [MOUNTPOINT]     # default: ~/secrate
#
# On a fresh Debian machine: installs fuse3 if missing, builds the release
# binary, creates the repository in the default local store
# ($XDG_DATA_HOME/secrate/store, else ~/.local/share/secrate/store) if there
# is none (asking for a passphrase and showing the recovery key once), and
# mounts it. Work in the mount as in any folder; every snapshot is under
# MOUNTPOINT/.history/. `secrate umount MOUNTPOINT` uploads and unmounts.
# Set SECRATE_STORE to use another store (s3://bucket/prefix, ...).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
mnt="${1:-$HOME/secrate}"

as_root() {
    if ((EUID == 0)); then "$@"; else sudo "$@"; fi
}

if ! command -v fusermount3 >/dev/null 2>&1; then
    echo "==> installing fuse3" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3 >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "run.sh: cargo is missing; install Rust 1.90 or newer with rustup (https://rustup.rs)" >&2
    exit 1
fi
if [[ ! -w /dev/fuse ]]; then
    echo "run.sh: /dev/fuse is not writable by $(id -un); run as root (or add yourself to the fuse group)" >&2
    exit 1
fi

echo "==> building secrate (release)" >&2
cargo build --release --quiet
bin="$PWD/target/release/secrate"

# Creates the repository (passphrase asked twice, recovery key shown once)
# only if the store has none.
"$bin" init --if-missing

mkdir -p "$mnt"
if mountpoint -q "$mnt"; then
    echo "run.sh: $mnt is already a mount point" >&2
    exit 1
fi
"$bin" mount "$mnt"
cat >&2 <<MSG

Work in $mnt as in any folder. Snapshots are sealed every minute while
something changes; browse them in $mnt/.history/ (latest -> the newest).
  $bin snapshot $mnt   # seal and upload a snapshot now
  $bin status $mnt     # what is waiting for upload
  $bin umount $mnt     # seal, upload everything, unmount
MSG
