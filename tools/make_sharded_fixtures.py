#!/usr/bin/python3
"""Writes the sharded training checkpoints the tests and the bench consolidate: DeepSpeed
ZeRO run folders and torch DCP folders, made with torch 1.13 alone (no DeepSpeed, no
torch.distributed.checkpoint), following ../shared/reference/sharded-formats.md §4, each
beside the tensors the consolidation must give.

    /usr/bin/python3 tools/make_sharded_fixtures.py --out DIR
        every test fixture: DIR/zero/NAME/ and DIR/dcp/NAME/, each holding run/ (the
        input), expected.pt (what the output must equal; none for a negative fixture)
        and fixture.json ({"model", "options", "error"}). --only zero|dcp: one family.
    /usr/bin/python3 tools/make_sharded_fixtures.py --bench KIND --params N --out DIR
        one run folder of N fp32 parameters on 2 ranks in DIR, for tools/bench.sh
        (KIND: zero2, zero3 or dcp).
"""
import argparse
import importlib
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))

# A family is one module of tools/sharded_fixtures/ (zero.py, dcp.py): it defines
# write_all(out), write_bench(kind, params, out) and BENCH_KINDS, the kinds it writes.
FAMILY_DIR = Path(__file__).resolve().parent / 'sharded_fixtures'
FAMILIES = sorted(p.stem for p in FAMILY_DIR.glob('*.py') if not p.stem.startswith('_'))


def family(name):
    return importlib.import_module(f'sharded_fixtures.{name}')


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', required=True, type=Path)
    bench_kinds = {kind: name for name in FAMILIES for kind in family(name).BENCH_KINDS}
    ap.add_argument('--bench', choices=sorted(bench_kinds))
    ap.add_argument('--params', type=int, default=100_000_000)
    ap.add_argument('--only', choices=FAMILIES, help='write one family of fixtures')
    args = ap.parse_args()
    if args.bench:
        name = bench_kinds[args.bench]
        args.out.mkdir(parents=True, exist_ok=True)
        family(name).write_bench(args.bench, args.params, args.out)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    for name in [args.only] if args.only else FAMILIES:
        (args.out / name).mkdir(parents=True, exist_ok=True)
        family(name).write_all(args.out / name)


if __name__ == '__main__':
    main()
