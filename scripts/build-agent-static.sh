#!/usr/bin/env bash
# Builds hearth-agent as a static binary for minimal guest root filesystems: glibc linked in
# (`+crt-static`, a static-pie), no PT_INTERP, no DT_NEEDED. glibc 2.34+ has its `files` and
# `dns` NSS modules inside libc, so the `resolve` op (getaddrinfo) works from /etc/hosts and
# /etc/resolv.conf without any libnss_*.so (docs/agent.md). Prints the binary's path.
#   usage: scripts/build-agent-static.sh [extra cargo args]
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
# Its own target directory under target/: the flags differ, so the host build stays cached.
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" CARGO_INCREMENTAL=0 \
  cargo build --release -p hearth-agent --target "$target" "$@" >&2
bin="target/$target/release/hearth-agent"
if readelf -l "$bin" | grep -q INTERP || readelf -d "$bin" | grep -q NEEDED; then
  echo "build-agent-static: $bin is not static:" >&2
  readelf -d -l "$bin" | grep -E 'INTERP|NEEDED' >&2
  exit 1
fi
echo "$PWD/$bin"
