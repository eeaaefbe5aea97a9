#!/usr/bin/env bash
# Installs what is missing, builds ckpt-convert, converts the bundled
# DataParallel sample checkpoint and shows the result.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/tools/install-deps.sh"
CMAKE_ARGS="${CMAKE_ARGS:-} -DCKPT_BUILD_TESTS=OFF" BUILD_DIR=${BUILD_DIR:-$root/build-demo} \
  "$root/tools/build.sh" ckpt-convert
bin=${BUILD_DIR:-$root/build-demo}/ckpt-convert
sample=$root/tests/data/dp_tiny_cnn.pth
out_dir=$(mktemp -d)
trap 'rm -rf "$out_dir"' EXIT
out=$out_dir/tiny_cnn.pth

echo "== The sample: a DataParallel state dict (keys start with 'module.')"
"$bin" inspect "$sample"
echo
echo "== Convert it for one device (verified on cpu)"
"$bin" "$sample" "$out" --device cpu
echo
echo "== The result"
"$bin" inspect "$out"
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c "import torch" 2>/dev/null; then
  echo
  echo "== Loaded by PyTorch with weights_only=True, into the plain (unwrapped) model"
  PYTHONPATH="$root/tests/e2e" /usr/bin/python3 - "$out" <<'PY'
import sys, torch
from models import TinyCNN
state = torch.load(sys.argv[1], weights_only=True)
TinyCNN().load_state_dict(state, strict=True)
print(f"ok: {len(state)} tensors loaded strict; first keys: {list(state)[:3]}")
PY
fi
