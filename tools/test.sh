#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (unit tests, and
# end-to-end tests of the real binary judged by real PyTorch).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/tools/install-deps.sh"
"$root/tools/build.sh"
build=${BUILD_DIR:-$root/build}
cd "$build"
ctest --output-on-failure -j "${JOBS:-$(nproc)}" "$@"
