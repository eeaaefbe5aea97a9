#!/usr/bin/python3
"""Judges ckpt's floating casts (src/transform/cast.cc) against torch's CPU `.to()`.

Generates a few million values of each source dtype that cover every exponent and the
rounding boundaries of the narrower targets, casts them with torch (contiguous tensors, as
a checkpoint's storages are) and with `ckpt_cast_tool`, and compares the bit patterns. Exit
0 when every bit agrees, 1 at the first pair that differs (printing a few values).

One allowance: torch 1.13 casts float64 -> bfloat16 in vector blocks whose NaN is 0xFFFF and
a scalar tail whose NaN is 0x7FC0, so which one a NaN gets depends on where it sits. There
ckpt always gives 0xFFFF; the judge accepts either from torch at NaN positions and still
requires ckpt's 0xFFFF. Every other pair, NaN included, must match exactly.

    /usr/bin/python3 tests/e2e/cast_judge.py --tool build/tests/ckpt_cast_tool --work /tmp/cj
"""
import argparse
import os
import subprocess
import sys

import numpy as np
import torch

TORCH = {'float32': torch.float32, 'float64': torch.float64,
         'float16': torch.float16, 'bfloat16': torch.bfloat16}
NUMPY_BITS = {'float32': np.uint32, 'float64': np.uint64, 'float16': np.uint16, 'bfloat16': np.uint16}
TORCH_BITS = {'float32': torch.int32, 'float64': torch.int64, 'float16': torch.int16, 'bfloat16': torch.int16}


def float32_patterns(rng):
    """float32 bit patterns: around every bfloat16 and float16 rounding boundary, plus random."""
    low16 = np.array([0, 1, 0x7FFF, 0x8000, 0x8001, 0xFFFF, 0x4000, 0xC000], dtype=np.uint32)
    bf16_edges = (np.arange(1 << 16, dtype=np.uint32)[:, None] << 16) | low16[None, :]
    low13 = np.array([0, 1, 0xFFF, 0x1000, 0x1001, 0x1FFF], dtype=np.uint32)
    f16_edges = (np.arange(1 << 19, dtype=np.uint32)[:, None] << 13) | low13[None, :]
    randoms = rng.integers(0, 1 << 32, size=1 << 20, dtype=np.uint64).astype(np.uint32)
    named = np.array([0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000,
                      0x7F800001, 0xFF800001, 0x7FFFFFFF, 0xFFFFFFFF, 0x7FD8C09A, 0x00000001,
                      0x007FFFFF, 0x7F7FFFFF, 0x477FF000, 0x477FEFFF, 0x33000000, 0x33000001],
                     dtype=np.uint32)
    return np.concatenate([named, bf16_edges.ravel(), f16_edges.ravel(), randoms])


def float64_values(f32_bits, rng):
    """float64 values: the float32 values, and ones just off them by less than a float32 step,
    where rounding twice (float64 -> float32 -> 16 bits) differs from rounding once."""
    with np.errstate(invalid='ignore'):
        f = f32_bits.view(np.float32).astype(np.float64)
    finite = rng.permutation(f[np.isfinite(f)])[: 1 << 20]
    nudge = np.ldexp(np.ones_like(finite), np.frexp(finite)[1] - 40)
    randoms = rng.integers(0, 1 << 64, size=1 << 19, dtype=np.uint64).view(np.float64)
    special = np.array([1e300, -1e300, 3.5e38, 2.0 ** -150, 2.0 ** -149 * 0.75, 1.0 + 2.0 ** -11 + 2.0 ** -40])
    with np.errstate(invalid='ignore', over='ignore'):
        return np.concatenate([special, f, finite + nudge, finite - nudge, randoms])


def torch_cast(values_bits, src, dst):
    signed = {np.uint16: np.int16, np.uint32: np.int32, np.uint64: np.int64}[NUMPY_BITS[src]]
    t = torch.from_numpy(values_bits.view(signed).copy()).view(TORCH[src])
    out = t.to(TORCH[dst]).contiguous()
    return out.view(TORCH_BITS[dst]).numpy().view(NUMPY_BITS[dst])  # native order, as the tool


def tool_cast(tool, work, values_bits, src, dst, path):
    src_path = os.path.join(work, f'{src}.bin')
    dst_path = os.path.join(work, f'{src}_to_{dst}_{path}.bin')
    values_bits.tofile(src_path)
    subprocess.run([tool, src, dst, src_path, dst_path] + (['portable'] if path == 'portable' else []),
                   check=True)
    return np.fromfile(dst_path, dtype=NUMPY_BITS[dst])


def is_nan(bits, dtype):
    if dtype == 'bfloat16':
        return (bits & 0x7FFF) > 0x7F80
    return np.isnan(bits.view({'float32': np.float32, 'float64': np.float64, 'float16': np.float16}[dtype]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--tool', required=True, help='the ckpt_cast_tool executable')
    parser.add_argument('--work', required=True, help='a folder for the raw files')
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    rng = np.random.default_rng(13)

    f32 = float32_patterns(rng)
    sources = {
        'float32': f32,
        'float64': float64_values(f32, rng).view(np.uint64),
        'float16': np.arange(1 << 16, dtype=np.uint32).astype(np.uint16),
        'bfloat16': np.arange(1 << 16, dtype=np.uint32).astype(np.uint16),
    }
    failed = False
    for src, values in sources.items():
        for dst in TORCH:
            if dst == src:
                continue
            want = torch_cast(values, src, dst)
            # float32 -> float16 has an F16C path and float32 -> bfloat16 an AVX-512
            # build where the CPU has them: judge both paths.
            wide = (src, dst) in (('float32', 'float16'), ('float32', 'bfloat16'))
            for path in ['best', 'portable'] if wide else ['best']:
                failed |= compare(src, dst, path, values, want,
                                  tool_cast(args.tool, args.work, values, src, dst, path))
    return 1 if failed else 0


def compare(src, dst, path, values, want, got):
    """Prints how many of `got` differ from torch's `want`, and a few of them; True if any do."""
    differ = want != got
    if src == 'float64' and dst == 'bfloat16':
        nan_in = is_nan(values, src)
        differ &= ~(nan_in & (want == 0x7FC0) & (got == 0xFFFF))
    count = int(np.count_nonzero(differ))
    width = np.dtype(NUMPY_BITS[src]).itemsize * 2
    out_width = np.dtype(NUMPY_BITS[dst]).itemsize * 2
    print(f'{src} -> {dst} ({path} path): {len(values)} values, {count} differ')
    for i in np.flatnonzero(differ)[:8]:
        print(f'  input 0x{int(values[i]):0{width}x}: torch 0x{int(want[i]):0{out_width}x}, '
              f'ckpt 0x{int(got[i]):0{out_width}x}')
    return count > 0


if __name__ == '__main__':
    sys.exit(main())
