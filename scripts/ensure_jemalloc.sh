#!/usr/bin/env bash
# jemalloc keeps long training processes from fragmenting memory (src/stratarl/allocator.py); the
# `stratarl` command preloads it when present. Optional: without it the system allocator is used.
set -u
for lib in /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 /usr/lib/aarch64-linux-gnu/libjemalloc.so.2 \
           /usr/lib64/libjemalloc.so.2 /usr/lib/libjemalloc.so.2 /usr/local/lib/libjemalloc.so.2; do
  [ -f "$lib" ] && exit 0
done
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "Installing libjemalloc2 with apt-get ..." >&2
  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libjemalloc2) >/dev/null && exit 0
fi
echo "libjemalloc2 not installed: stratarl runs on the system allocator (slower long runs, see docs/performance.md)." >&2
exit 0
