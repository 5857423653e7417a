#!/usr/bin/env bash
# Makes Triton's perf_analyzer runnable for benchmarks/bench_triton.py.
#
# The pip package perf-analyzer ships the binary only in manylinux_2_38 wheels (glibc >= 2.38);
# Debian 12 has glibc 2.36, where pip resolves to a 0.1.0 placeholder without a binary. This script
# fetches the real wheel with pip and, when the system glibc is older, Debian 13's C and C++
# runtime with apt, then writes a wrapper that runs the binary through Debian 13's dynamic loader.
# Nothing is installed system-wide: everything lands in DEST (default var/perf_analyzer).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST="${1:-var/perf_analyzer}"
PIP="${PIP:-.venv/bin/pip}"
VERSION="${PERF_ANALYZER_VERSION:-2.60.0}"
mkdir -p "$DEST"
DEST="$(cd "$DEST" && pwd)"

"$PIP" download --quiet --no-deps "perf-analyzer==$VERSION" --platform manylinux_2_38_x86_64 \
  --only-binary=:all: -d "$DEST/wheel"
rm -rf "$DEST/pkg" && mkdir -p "$DEST/pkg"
python3 -m zipfile -e "$DEST"/wheel/perf_analyzer-"$VERSION"-*.whl "$DEST/pkg"
BIN="$DEST/pkg/perf_analyzer/bin/perf_analyzer"
chmod +x "$BIN"

if "$BIN" --version >/dev/null 2>&1; then
  printf '#!/bin/sh\nexec "%s" "$@"\n' "$BIN" >"$DEST/perf_analyzer"
else
  APT_DIR="$DEST/apt"
  mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$APT_DIR/debs"
  echo "deb http://deb.debian.org/debian trixie main" >"$APT_DIR/sources.list"
  APT=(-o "Dir::Etc::SourceList=$APT_DIR/sources.list" -o Dir::Etc::SourceParts=/dev/null
       -o "Dir::State::Lists=$APT_DIR/lists" -o "Dir::Cache=$APT_DIR/cache")
  apt-get "${APT[@]}" update -qq
  (cd "$APT_DIR/debs" && apt-get "${APT[@]}" download -qq libc6 libstdc++6 libgcc-s1 zlib1g libssl3t64)
  rm -rf "$DEST/root"
  for deb in "$APT_DIR"/debs/*.deb; do dpkg-deb -x "$deb" "$DEST/root"; done
  LIB="$DEST/root/usr/lib/x86_64-linux-gnu"
  printf '#!/bin/sh\nexec "%s" --library-path "%s" "%s" "$@"\n' \
    "$LIB/ld-linux-x86-64.so.2" "$LIB" "$BIN" >"$DEST/perf_analyzer"
fi
chmod +x "$DEST/perf_analyzer"
"$DEST/perf_analyzer" --version
echo "perf_analyzer ready: $DEST/perf_analyzer"
