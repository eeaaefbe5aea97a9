#!/usr/bin/env bash
# Checks float32 → bfloat16 and float32 → float16 (portable and F16C paths)
# over all 2^32 float32 bit patterns against the references in
# tests/unit/cast_test.cc; the unit suite strides through the space instead.
# About 40 s. Needs a build (tools/build.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
CKPT_CAST_SWEEP_STRIDE=1 exec "$build/tests/ckpt_unit_tests" --gtest_filter='CastSweep.*'
