#!/usr/bin/env bash
# The bash completion the build wrote (build/ckpt-convert.bash): sourced in bash, its
# function called with COMP_WORDS and COMP_CWORD as readline sets them, the candidates
# compared with what each case must offer. Usage: completion_test.sh COMPLETION_FILE
set -uo pipefail
completion=$(realpath "$1")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" && mkdir zoo && touch a.pth b.pth.tar rules.toml
# shellcheck source=/dev/null
source "$completion" || { echo "FAIL: cannot source $completion"; exit 1; }
complete -p ckpt-convert >/dev/null || { echo "FAIL: no completion registered for ckpt-convert"; exit 1; }

failures=0
# Calls the completion function on COMP_WORDS (the last word being completed) and compares
# its candidates with `$2`, naming the case `$1`.
complete_and_compare() {
  COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
  COMPREPLY=()
  _ckpt_convert
  local got want
  got=$(printf '%s\n' "${COMPREPLY[@]}" | sort | tr '\n' ' ')
  want=$(printf '%s\n' $2 | sort | tr '\n' ' ')
  if [[ $got != "$want" ]]; then
    echo "FAIL: $1: got '$got', want '$want'"
    failures=$((failures + 1))
  fi
}
# expect "WORD..." "EXPECTED CANDIDATES": a trailing space starts an empty word.
expect() {
  read -r -a COMP_WORDS <<<"$1"
  [[ $1 == *" " ]] && COMP_WORDS+=("")
  complete_and_compare "'$1'" "$2"
}
# expect_split "EXPECTED CANDIDATES" WORD...: the words as readline splits them (= and :
# are word breaks).
expect_split() {
  COMP_WORDS=("${@:2}")
  complete_and_compare "split ${*:2}" "$1"
}

cuda="cuda cuda:0 cuda:1 cuda:2 cuda:3 cuda:4 cuda:5 cuda:6 cuda:7"
expect "ckpt-convert " "inspect batch check a.pth b.pth.tar rules.toml zoo"
expect "ckpt-convert i" "inspect"
expect "ckpt-convert a" "a.pth"
expect "ckpt-convert a.pth " "a.pth b.pth.tar rules.toml zoo"
expect "ckpt-convert --pre" "--preset"
expect "ckpt-convert --preset " "unwrap none lightning ddp add-module"
expect "ckpt-convert --preset l" "lightning"
expect "ckpt-convert --preset=a" "--preset=add-module"
expect "ckpt-convert --device=cu" "--device=cuda --device=cuda:0 --device=cuda:1 --device=cuda:2 --device=cuda:3 --device=cuda:4 --device=cuda:5 --device=cuda:6 --device=cuda:7"
expect_split "unwrap" ckpt-convert --preset = u
expect_split "unwrap none lightning ddp add-module" ckpt-convert --preset = ""
expect "ckpt-convert --device " "cpu $cuda"
expect "ckpt-convert --device c" "cpu $cuda"
expect "ckpt-convert --location k" "keep"
expect "ckpt-convert a.pth --device cuda:" "cuda:0 cuda:1 cuda:2 cuda:3 cuda:4 cuda:5 cuda:6 cuda:7"
expect_split "0 1 2 3 4 5 6 7" ckpt-convert --device cuda : ""
expect_split "3" ckpt-convert --device cuda : 3
expect "ckpt-convert --rules r" "rules.toml"
expect "ckpt-convert --strip " ""
expect "ckpt-convert --replace OLD " ""
expect "ckpt-convert --replace OLD NEW " "inspect batch check a.pth b.pth.tar rules.toml zoo"
expect "ckpt-convert --replace OLD NEW a" "a.pth"
expect "ckpt-convert --dry" "--dry-run"
expect "ckpt-convert inspect " "a.pth b.pth.tar rules.toml zoo"
expect "ckpt-convert inspect --" "--help --json --tag"
expect "ckpt-convert check --expect-" "--expect-keys --expect-model"
expect "ckpt-convert check --pre" ""
expect "ckpt-convert check --device cuda:1 --fin" "--finite"
expect "ckpt-convert batch --j" "--jobs --json"
expect "ckpt-convert batch -o " "zoo"
expect "ckpt-convert batch zoo --preset d" "ddp"
expect "ckpt-convert batch --jobs 4 --shard " ""
expect "ckpt-convert --preset ddp check --fin" "--finite"

if ((failures > 0)); then
  echo "$failures completion case(s) failed"
  exit 1
fi
echo "all completion cases passed"
