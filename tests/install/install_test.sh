#!/usr/bin/env bash
# Installs the build into a temporary root (cmake --install) and, with --deb, builds the
# .deb (cpack -G DEB) and unpacks it into another (dpkg-deb -x; nothing goes into the real
# system); then runs the installed ckpt-convert on a fixture, checks it finds the installed
# LibTorch plugin, that the man page renders and names every option of every --help, that
# the bash completion is in place, and that the package's Depends are Debian packages.
# Usage: install_test.sh [--deb] BUILD_DIR SOURCE_DIR
set -uo pipefail
deb=0
if [[ ${1:-} == --deb ]]; then
  deb=1
  shift
fi
build=$(realpath "$1")
source_dir=$(realpath "$2")
fixture=$source_dir/tests/data/dp_tiny_cnn.pth
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
unset CKPT_TORCH_PLUGIN
failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}

if ((deb)); then
  (cd "$work" && cpack -G DEB --config "$build/CPackConfig.cmake" -B "$work/pkg" >"$work/cpack.log" 2>&1) ||
    { cat "$work/cpack.log"; echo "FAIL: cpack -G DEB"; exit 1; }
  package=$(ls "$work"/pkg/ckpt-convert_*.deb 2>/dev/null | head -1)
  [[ -n $package ]] || { ls -R "$work/pkg"; echo "FAIL: cpack wrote no ckpt-convert_*.deb"; exit 1; }
  info=$(dpkg-deb -I "$package")
  [[ $(dpkg-deb -f "$package" Package) == ckpt-convert ]] || fail "package name: $(dpkg-deb -f "$package" Package)"
  depends=$(dpkg-deb -f "$package" Depends)
  echo "Depends: $depends"
  for needed in libc6 libstdc++6 libtorch1.13; do
    [[ ", $depends" == *", $needed "* || ", $depends," == *", $needed,"* ]] || fail "Depends lacks $needed: $depends"
  done
  # Every package named must be a real one: one this machine built and ran against, or
  # one such a package provides (libspdlog1.10 provides libspdlog1.10-fmt9).
  provided=$(dpkg-query -W -f='${Provides}\n' 2>/dev/null | tr ',' '\n' | sed -E 's/^ *([^ (]+).*/\1/')
  IFS=',' read -r -a clauses <<<"$depends"
  for clause in "${clauses[@]}"; do
    name=$(sed -E 's/^ *([^ (|]+).*/\1/' <<<"$clause")
    dpkg-query -W -f='${Status}' "$name" 2>/dev/null | grep -q "install ok installed" ||
      grep -qxF "$name" <<<"$provided" ||
      fail "Depends names $name, which no package installed here is or provides"
  done
  grep -q "Description: Turn multi-GPU" <<<"$info" || fail "no Description in: $info"
  dpkg-deb -x "$package" "$work/root" || { echo "FAIL: dpkg-deb -x"; exit 1; }
  root=$work/root/usr
else
  cmake --install "$build" --prefix "$work/root" >"$work/install.log" 2>&1 ||
    { cat "$work/install.log"; echo "FAIL: cmake --install"; exit 1; }
  root=$work/root
fi

binary=$root/bin/ckpt-convert
for file in bin/ckpt-convert lib/ckpt-convert/libckpt_torch.so share/man/man1/ckpt-convert.1 \
  share/bash-completion/completions/ckpt-convert; do
  [[ -f $root/$file ]] || fail "not installed: $file"
done
[[ -x $binary ]] || { echo "FAIL: $binary is not executable"; exit 1; }

# The installed binary converts a fixture.
"$binary" "$fixture" "$work/out.pth" -q 2>"$work/convert.err" || fail "convert exit $?: $(cat "$work/convert.err")"
[[ -s $work/out.pth ]] || fail "no output written"
"$binary" --version | grep -q '^ckpt-convert ' || fail "--version: $("$binary" --version)"

# It finds the installed plugin (../lib/ckpt-convert/): on this CPU-only LibTorch, a CUDA
# device is refused by the plugin (exit 4), not for want of the plugin.
"$binary" "$fixture" "$work/gpu.pth" --device cuda:0 2>"$work/gpu.err"
status=$?
if ! grep -q "this LibTorch or this machine has no CUDA" "$work/gpu.err"; then
  fail "--device cuda:0 exit $status did not reach the installed plugin: $(cat "$work/gpu.err")"
elif [[ $status -ne 4 ]]; then
  fail "--device cuda:0 exit $status, want 4"
fi
grep -q "cannot be loaded" "$work/gpu.err" && fail "the installed plugin cannot be loaded: $(cat "$work/gpu.err")"

# The man page: groff reads it without a warning, man renders it, and every option of
# every command's --help is in it.
page=$root/share/man/man1/ckpt-convert.1
if command -v groff >/dev/null; then
  warnings=$(groff -man -Tutf8 -ww -z "$page" 2>&1)
  [[ -z $warnings ]] || fail "groff warns on the man page: $warnings"
fi
if command -v man >/dev/null; then
  rendered=$(MANWIDTH=100 man -l "$page" 2>"$work/man.err") || fail "man -l: $(cat "$work/man.err")"
else
  rendered=$(cat "$page")
fi
grep -q "^NAME" <<<"$rendered" && grep -q "ckpt-convert - " <<<"$rendered" || fail "man page has no NAME line"
for command in "" inspect batch check; do
  # shellcheck disable=SC2086
  options=$("$binary" $command --help | grep -oE '^ +(-[a-z],)?--[a-z][a-z-]*' | sed -E 's/.*--/--/' | sort -u)
  [[ -n $options ]] || fail "no options found in ckpt-convert $command --help"
  for option in $options; do
    grep -qe "$option" <<<"$rendered" || fail "man page lacks $option of 'ckpt-convert $command --help'"
  done
done

# The completion file defines the completion for ckpt-convert.
bash -c "source '$root/share/bash-completion/completions/ckpt-convert' && complete -p ckpt-convert" \
  >/dev/null 2>&1 || fail "the installed completion does not register for ckpt-convert"

if ((failures > 0)); then
  echo "$failures check(s) failed"
  exit 1
fi
echo "installed ckpt-convert passed every check"
