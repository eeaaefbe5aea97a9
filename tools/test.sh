#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (unit tests, the fuzz
# corpus replays, and end-to-end tests of the real binary judged by real
# PyTorch); then builds and runs them all again under AddressSanitizer,
# UndefinedBehaviorSanitizer and LeakSanitizer (tools/sanitize.sh).
# CKPT_SANITIZE_TESTS=0 skips the sanitizer pass (for a quick local run).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/tools/install-deps.sh"
"$root/tools/build.sh"
build=${BUILD_DIR:-$root/build}
# An end-to-end group passes when some of its cases were skipped (no root for a
# tmpfs, a CUDA machine): name them, so that a green run says what it did not do.
print_skipped() {
  local skipped
  skipped=$(grep -h '^SKIP ' "$1/Testing/Temporary/LastTest.log" 2>/dev/null || true)
  if [ -n "$skipped" ]; then
    echo "test.sh: end-to-end cases skipped in the $2 run (their groups show as passed):"
    echo "$skipped" | sed 's/^/  /'
  fi
}
(cd "$build" && ctest --output-on-failure -j "${JOBS:-$(nproc)}" "$@")
print_skipped "$build" plain
if [ "${CKPT_SANITIZE_TESTS:-1}" != 0 ]; then
  "$root/tools/sanitize.sh" "$@"
  print_skipped "${SANITIZE_BUILD_DIR:-$root/build-asan}" sanitizer
fi
