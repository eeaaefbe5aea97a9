#!/usr/bin/python3
"""Write safetensors files with the reference writer, to check the C++ codec against.

    python3 tools/make_safetensors_golden.py --out DIR

Needs torch and the `safetensors` package (not installed on the build machines: run it
where it is). Each file is what `safetensors.torch.save_file` writes for one small state
dict; `DIR/headers.txt` lists, per file, the header bytes (8-byte length + JSON + padding)
as a Python bytes literal, which tests/unit/safetensors_codec_test.cc's writer cases should
equal byte for byte. Metadata has at most one key, so the output does not depend on
HashMap order.
"""
import argparse
import os

import torch
from safetensors.torch import save_file

CASES = {
    "empty": ({}, None),
    "empty_framework_pt": ({}, {"framework": "pt"}),
    "test_in_memory": ({"test": torch.zeros((2, 2))}, None),
    "save_file_format_pt": (
        {"w": torch.zeros(3, dtype=torch.float16), "b": torch.zeros((), dtype=torch.float32)},
        {"format": "pt"},
    ),
    "dtype_order": (
        {
            "a": torch.zeros(1, dtype=torch.float16),
            "b": torch.zeros(1, dtype=torch.float32),
            "c": torch.zeros(1, dtype=torch.bool),
            "d": torch.zeros(1, dtype=torch.int64),
            "B": torch.zeros(1, dtype=torch.float32),
            "f": torch.zeros(1, dtype=torch.uint8),
            "g": torch.zeros(1, dtype=torch.bfloat16),
            "h": torch.zeros(1, dtype=torch.complex64),
        },
        None,
    ),
    "escapes": (
        {"q\"\\\n\x01\x7f\u00e9": torch.zeros(0, dtype=torch.uint8)},
        {"k": "\t\b\f\r/"},
    ),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    lines = []
    for name, (state_dict, metadata) in CASES.items():
        path = os.path.join(args.out, name + ".safetensors")
        save_file(state_dict, path, metadata=metadata)
        with open(path, "rb") as f:
            data = f.read()
        n = int.from_bytes(data[:8], "little")
        lines.append(f"{name}: {data[:8 + n]!r}")
    with open(os.path.join(args.out, "headers.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
