#!/usr/bin/env bash
# The GPU check: builds ckpt-convert against the CUDA LibTorch of a machine whose
# Python has CUDA PyTorch, converts the fixtures with --device cuda:0 (one by one and as a
# batch), runs `check --device cuda:0` on every output, and loads every output with that
# machine's Python: torch.load(weights_only=True) onto the GPU, load_state_dict(strict=True)
# into the plain model, bitwise equal to the input. Prints a result line for the GPU
# table of docs/building.md and exits non-zero when anything failed.
#
#   tools/gpu-check.sh [--python PY] [--device cuda:N] [--deps DIR] [--build-dir DIR]
#   tools/gpu-check.sh --pack-deps DIR     # on a Debian 12 machine: fetch the .debs to carry
#
# Dependencies other than LibTorch (CLI11, spdlog+fmt, nlohmann-json, RE2, toml++, zlib
# headers) come from, in this order: --deps DIR (Debian 12 .deb files made by --pack-deps,
# unpacked here without root: no apt needed on the GPU machine), else the system's (which
# apt-get installs when this runs as root on Debian or Ubuntu). The carried shared
# libraries (libspdlog, libfmt, libre2) need glibc >= 2.36 (Debian 12): on an older host,
# install that distribution's own -dev packages instead, or run this script in a
# `debian:12` container started with `--gpus all`.
#
# The Python needs torch (CUDA), numpy (the e2e judge's helpers) and, for the ResNet-18 and
# MobileNetV3 fixtures, torchvision. --device cpu runs the same steps without a GPU (a
# self-test of this script, not a GPU run).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

python=python3
device=cuda:0
deps=""
build=""
torch_prefix=""
pack=""
carried=(libcli11-dev nlohmann-json3-dev libspdlog-dev libspdlog1.10 libfmt-dev libfmt9
         libre2-dev libre2-9 libtomlplusplus-dev libtomlplusplus3 zlib1g-dev zlib1g)

usage() { sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --python) python=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --deps) deps=$(cd "$2" && pwd); shift 2 ;;
    --build-dir) build=$2; shift 2 ;;
    --torch-prefix) torch_prefix=$2; shift 2 ;;   # instead of torch.utils.cmake_prefix_path
    --pack-deps) pack=$2; shift 2 ;;
    -h|--help) usage ;;
    *) echo "gpu-check: unknown argument $1" >&2; usage ;;
  esac
done

say() { echo "gpu-check: $*" >&2; }
die() { say "error: $*"; exit 1; }

# ---------------------------------------------------------------- --pack-deps: the .debs
if [ -n "$pack" ]; then
  command -v apt-get >/dev/null || die "--pack-deps needs apt-get (a Debian 12 machine)"
  mkdir -p "$pack"
  (cd "$pack" && apt-get download "${carried[@]}")
  (cd "$pack" && for f in *.deb; do dpkg-deb -W --showformat='${Package} ${Version}\n' "$f"; done) \
    > "$pack/MANIFEST"
  say "wrote $(ls "$pack"/*.deb | wc -l) packages to $pack (see $pack/MANIFEST); copy the folder"
  say "to the GPU machine and run: tools/gpu-check.sh --deps $(basename "$pack")"
  exit 0
fi

# ---------------------------------------------------------------- the machine
command -v "$python" >/dev/null || die "no $python; give --python PY (a Python with CUDA PyTorch)"
command -v cmake >/dev/null || die "no cmake: $python -m pip install cmake ninja"
generator="Unix Makefiles"
command -v ninja >/dev/null && generator=Ninja
read -r torch_version torch_cuda cuda_ok < <("$python" -c \
  'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())') \
  || die "$python cannot import torch"
if [ -z "$torch_prefix" ]; then
  torch_prefix=$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)')
fi
[ -d "$torch_prefix" ] || die "no LibTorch CMake files at $torch_prefix (give --torch-prefix DIR)"
gpu="none"
driver="none"
if [ "$device" != cpu ]; then
  [ "$cuda_ok" = True ] || die "torch $torch_version in $python sees no CUDA device (torch.version.cuda=$torch_cuda)"
  if command -v nvidia-smi >/dev/null; then
    gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
    driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)
  else
    gpu=$("$python" -c 'import torch; print(torch.cuda.get_device_name(0))')
  fi
fi
say "torch $torch_version (CUDA $torch_cuda) from $python; LibTorch at $torch_prefix; GPU: $gpu, driver $driver"

# ---------------------------------------------------------------- the other dependencies
prefixes="$torch_prefix"
cmake_extra=()
if [ -n "$deps" ]; then
  unpacked="$deps/root"
  if [ ! -d "$unpacked/usr" ]; then
    mkdir -p "$unpacked"
    for f in "$deps"/*.deb; do dpkg-deb -x "$f" "$unpacked" 2>/dev/null || \
      (cd "$unpacked" && ar p "$f" data.tar.xz | tar -xJ) ; done
    # absolute symlinks (libz.so -> /lib/.../libz.so.1.2.13) must point into the tree
    find "$unpacked" -type l | while read -r link; do
      target=$(readlink "$link")
      case "$target" in /*) [ -e "$unpacked$target" ] && ln -sfn "$unpacked$target" "$link" ;; esac
    done
  fi
  multiarch=$(ls -d "$unpacked"/usr/lib/*-linux-gnu 2>/dev/null | head -1)
  [ -n "$multiarch" ] || die "$deps holds no unpackable Debian packages (make them with --pack-deps)"
  libdirs="$multiarch"
  [ -d "$unpacked/lib/$(basename "$multiarch")" ] && libdirs="$libdirs:$unpacked/lib/$(basename "$multiarch")"
  prefixes="$prefixes;$unpacked/usr"
  export PKG_CONFIG_LIBDIR="$multiarch/pkgconfig:$unpacked/usr/share/pkgconfig"
  export PKG_CONFIG_SYSROOT_DIR="$unpacked"
  export LD_LIBRARY_PATH="$libdirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  cmake_extra+=("-Dspdlog_DIR=$multiarch/cmake/spdlog" "-Dfmt_DIR=$multiarch/cmake/fmt"
                "-DCMAKE_CXX_FLAGS=-isystem $unpacked/usr/include"
                "-DCMAKE_BUILD_RPATH=${libdirs//:/;}")
  say "dependencies from $deps"
elif command -v apt-get >/dev/null && [ "$(id -u)" -eq 0 ]; then
  apt-get install -y -qq --no-install-recommends cmake g++ pkg-config "${carried[@]}" >/dev/null \
    || say "apt-get could not install ${carried[*]}; trying what is installed"
fi

# ---------------------------------------------------------------- build
build=${build:-$root/build-gpu}
cmake -S "$root" -B "$build" -G "$generator" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefixes" -DCKPT_BUILD_TESTS=OFF -DCKPT_WERROR=OFF "${cmake_extra[@]}" >&2
cmake --build "$build" --parallel >&2
bin="$build/ckpt-convert"
[ -x "$bin" ] || die "the build made no $bin"

# ---------------------------------------------------------------- convert, check, load
work="$build/gpu-check"
rm -rf "$work"
mkdir -p "$work/single" "$work/extract" "$work/batch"
failures=0
fail() { say "FAIL: $*"; failures=$((failures + 1)); }

# the fixtures the default rules (unwrap) turn into the plain model's state dict
fixtures=()
for name in dp_tiny_cnn imagenet_checkpoint legacy_dp orig_mod_module module_orig_mod fsdp_style \
            tied_weights cuda3_tagged dtypes views namespace_numpy clean_cpu; do
  fixtures+=("$root/tests/data/$name.pth")
done
if "$python" -c 'import torchvision' 2>/dev/null; then
  "$python" "$root/tools/make_fixtures.py" --out "$work/large" --large >/dev/null 2>&1 \
    && fixtures+=("$work/large/dp_resnet18.pth" "$work/large/dp_mobilenet_v3_small.pth") \
    || say "no large fixtures (tools/make_fixtures.py --large failed); the small ones only"
fi

converted=0
extractable=()
for f in "${fixtures[@]}"; do
  name=$(basename "$f")
  if "$bin" "$f" "$work/single/$name" --device "$device" -q; then
    converted=$((converted + 1))
  else
    fail "ckpt-convert $name --device $device (exit $?)"
  fi
  # bare state dicts: what a deployment loads
  if "$bin" "$f" "$work/extract/$name" --device "$device" --extract -q 2>/dev/null; then
    extractable+=("$f")
    finite=--finite
    [ "$name" = dtypes.pth ] && finite=""   # it holds NaN and Inf on purpose
    if ! "$bin" check "$work/extract/$name" --device "$device" --no-wrapper-prefixes $finite -q; then
      fail "check $name --device $device"
    fi
  fi
done
# in parallel, as a batch (threads loading tensors on the GPU at once)
"$bin" batch "${extractable[@]}" -o "$work/batch" --device "$device" --jobs 4 --extract -q \
  --report "$work/batch.jsonl" || fail "batch --device $device (exit $?; see $work/batch.jsonl)"

# PyTorch's verdict on every output
judge=$(cat <<'EOF'
import pathlib, sys, torch
root, work, device = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3]
sys.path.insert(0, root + '/tests/e2e')
import judge as j
from cases import FIXTURES
from models import build
inputs = {p.name: p for d in (pathlib.Path(root) / 'tests/data', work / 'large') for p in d.glob('*.pth')}
bad = 0
for out in sorted(p for d in ('single', 'extract', 'batch') for p in (work / d).glob('*.pth')):
    kind, name = out.parent.name, out.name
    fx = FIXTURES.get(name)
    try:
        try:
            obj = torch.load(str(out), weights_only=True, map_location=device)
        except Exception:
            if kind != 'single' or not (fx and fx.weights_only_limits):
                raise
            # optimizer floats or saved args: refused by weights_only before torch 2.4, as the input
            obj = j.load(out, map_location=device)
        if kind != 'single':
            src = j.find_model_state_dict(j.load(inputs[name], map_location='cpu'), fx.sd_key if fx else None)
            rules = j.Rules()
            if sorted(obj) != sorted(rules.key(k) for k in src):
                raise RuntimeError(f'keys {list(obj)[:3]}... are not the unwrapped input keys')
            for k, v in src.items():
                w = obj[rules.key(k)]
                if w.device != torch.device(device) and w.numel():
                    raise RuntimeError(f'{k} is on {w.device}, not {device}')
                if j.element_bytes(w.cpu()) != j.element_bytes(v):
                    raise RuntimeError(f'{k} differs from the input')
            if fx and fx.model:
                build(fx.model).to(device).load_state_dict(obj, strict=True)
        print(f'ok   {kind}/{name}')
    except Exception as e:
        bad += 1
        print(f'FAIL {kind}/{name}: {type(e).__name__}: {str(e)[:300]}')
sys.exit(1 if bad else 0)
EOF
)
"$python" -c "$judge" "$root" "$work" "$device" >&2 || fail "torch.load/load_state_dict on $device"

# ---------------------------------------------------------------- the record
result=PASS
[ "$failures" -eq 0 ] || result="FAIL ($failures failures)"
line="$(date -u +%Y-%m-%d) | $gpu | driver $driver | torch/LibTorch $torch_version (CUDA $torch_cuda) | device $device | $converted of ${#fixtures[@]} fixtures converted, checked and loaded | $result"
echo "$line" | tee "$work/result.md"
[ "$failures" -eq 0 ]
