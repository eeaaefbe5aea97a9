#!/usr/bin/env bash
# Configures and builds ckpt-convert in build/ (or $BUILD_DIR). Extra
# arguments go to ninja (for example a target name).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
jobs=${JOBS:-$(nproc)}
if [ ! -f "$build/build.ninja" ]; then
  cmake -S "$root" -B "$build" -G Ninja ${CMAKE_ARGS:-}
fi
cmake --build "$build" -j "$jobs" -- "$@"
