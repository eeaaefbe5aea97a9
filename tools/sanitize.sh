#!/usr/bin/env bash
# Builds everything with AddressSanitizer and UndefinedBehaviorSanitizer (and
# LeakSanitizer at exit) in build-asan/ (or $SANITIZE_BUILD_DIR) and runs every
# test there: unit tests, the fuzz corpus replays, the end-to-end cases (whose
# judge fails any run that prints a sanitizer report). Extra arguments go to
# ctest. tools/test.sh runs it after the plain build's tests.
#
# The report options and LibTorch's leak suppressions are compiled into the
# executables (tests/sanitizers/defaults.cc); a report exits with status 86.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${SANITIZE_BUILD_DIR:-$root/build-asan}
jobs=${JOBS:-$(nproc)}
# float-cast-overflow joins `undefined` because GCC leaves it out of that
# group (clang does not): a float converted to an integer it does not fit is
# undefined, and the casts and their reference check convert many.
# -O1 -g1 (line tables, enough for the reports' file:line) instead of the
# default -O2 -g: on the 2-core development machine the instrumented build
# took 7 minutes at -O2 -g and 3.9 at -O1 -g1, its tests as long (2.7-2.8
# minutes); -O1 is what the sanitizers' own documentation suggests.
if [ ! -f "$build/build.ninja" ]; then
  cmake -S "$root" -B "$build" -G Ninja -DCKPT_SANITIZE=address,undefined,float-cast-overflow \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
    ${CMAKE_ARGS:-}
fi
cmake --build "$build" -j "$jobs"
cd "$build"
# The install tests check packaging (cmake --install, the .deb), which a
# sanitizer build has nothing to add to: the plain pass runs them.
ctest --output-on-failure -j "$jobs" -E '^install[.]' "$@"
