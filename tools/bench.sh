#!/usr/bin/env bash
# Speed and memory benchmark (issue 5): generates synthetic DDP checkpoints with
# PyTorch, then times cp, ckpt-convert (with and without verification),
# inspect and the Python baseline side by side, alternating, then batch --jobs 1
# against --jobs 2 over a zoo of 40 files of 30 MB, then the deployment formats
# of issue 13 (safetensors, --dtype bf16, shards, safetensors in) against cp and
# Python's torch.load/.to(bf16)/torch.save, and prints tables of medians, ratios,
# peak RSS and peak anonymous memory. Run by hand; takes about 15 minutes.
#
#   tools/bench.sh [--runs N] [--dir DIR] [--skip-python] [--only NAME]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/tools/install-deps.sh"
if [ ! -x /usr/bin/time ]; then
  if [ "$(id -u)" -eq 0 ]; then apt-get install -y -qq time >/dev/null; else
    echo "bench: /usr/bin/time is missing: sudo apt-get install time" >&2; exit 1; fi
fi
CMAKE_ARGS="${CMAKE_ARGS:-} -DCKPT_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=Release" \
  BUILD_DIR=${BUILD_DIR:-$root/build-bench} "$root/tools/build.sh" ckpt-convert ckpt_torch >&2
exec /usr/bin/python3 "$root/tools/bench/bench.py" --bin "${BUILD_DIR:-$root/build-bench}/ckpt-convert" "$@"
