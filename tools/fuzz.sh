#!/usr/bin/env bash
# Fuzzes one target with libFuzzer, AddressSanitizer and UndefinedBehaviorSanitizer:
#
#   tools/fuzz.sh TARGET SECONDS [libFuzzer options...]
#
# TARGET is one of pickle, zip, checkpoint, convert, rule_file, hf_index, safetensors,
# dcp_metadata
# (fuzz/fuzz_TARGET.cc).
# Builds with Debian's clang in build-fuzz/ (or $FUZZ_BUILD_DIR), seeds from tests/data,
# the attack generator and tests/corpus/TARGET/, and grows build-fuzz/corpus/TARGET/.
# An input that crashes, hangs (over 10 s) or runs out of memory is written to
# tests/corpus/TARGET/: fix the bug and commit the input; ctest replays that folder in
# every run. Prints libFuzzer's final stats and a one-line summary; exits non-zero on a
# finding.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if [ $# -lt 2 ]; then
  echo "usage: tools/fuzz.sh TARGET SECONDS [libFuzzer options...]" >&2
  exit 2
fi
target=$1
seconds=$2
shift 2
if [ ! -f "$root/fuzz/fuzz_$target.cc" ]; then
  echo "fuzz.sh: no target '$target' (have: $(cd "$root/fuzz" && ls fuzz_*.cc | sed 's/fuzz_//; s/\.cc//' | tr '\n' ' '))" >&2
  exit 2
fi
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}

"$root/tools/install-deps.sh"
# libFuzzer and the sanitizer runtimes come with Debian's clang.
fuzz_packages=(clang libclang-rt-dev)
missing=()
for package in "${fuzz_packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "fuzz.sh: missing packages; run: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -f "$build/build.ninja" ]; then
  CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCKPT_FUZZ=ON -DCKPT_BUILD_TESTS=OFF >/dev/null
fi
cmake --build "$build" -j "${JOBS:-$(nproc)}" --target "fuzz_$target"

rm -rf "$build/seeds"
python3 "$root/fuzz/make_seeds.py" "$build/seeds" >/dev/null
corpus=$build/corpus/$target
findings=$root/tests/corpus/$target
mkdir -p "$corpus" "$build/seeds/$target" "$findings" "$build/logs"
options=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -use_value_profile=1
         -print_final_stats=1 -artifact_prefix="$findings/")
case $target in
  pickle) options+=(-dict="$root/fuzz/pickle.dict") ;;
  zip|checkpoint|convert) options+=(-dict="$root/fuzz/zip.dict") ;;
  hf_index) options+=(-dict="$root/fuzz/hf_index.dict") ;;
  safetensors) options+=(-dict="$root/fuzz/safetensors.dict") ;;
  dcp_metadata) options+=(-dict="$root/fuzz/dcp_metadata.dict") ;;
esac
log=$build/logs/$target.log
set +e
"$build/fuzz/fuzz_$target" "${options[@]}" "$@" "$corpus" "$build/seeds/$target" "$findings" \
  2>&1 | tee "$log" | grep --line-buffered -v '^#[0-9]'
status=${PIPESTATUS[0]}
set -e
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
echo "fuzz.sh: $target: ${runs:-?} executions in ${seconds} s (${rate:-?}/s), corpus $(ls "$corpus" | wc -l) inputs, exit $status; log $log"
exit "$status"
