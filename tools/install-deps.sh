#!/usr/bin/env bash
# Installs the Debian packages ckpt-convert needs to build and test: with
# apt-get when run as root, otherwise prints the command to run.
set -euo pipefail

packages=(
  cmake ninja-build g++ pkg-config zlib1g-dev python3 dpkg-dev groff-base man-db
  libtorch-dev libcli11-dev libspdlog-dev libgtest-dev libre2-dev
  libtomlplusplus-dev nlohmann-json3-dev
  python3-torch python3-torchvision python3-numpy python3-jsonschema
)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "install-deps: missing packages; run:" >&2
  echo "  sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
