#!/usr/bin/env python3
"""Seed corpora for the fuzz targets, made from the committed fixtures (tests/data) and
the attack corpus generator (tools/make_attacks.py); Python's standard library only.

    python3 fuzz/make_seeds.py OUT_DIR

writes OUT_DIR/<target>/<name> for every target in fuzz/CMakeLists.txt. Deterministic.
"""
import collections
import hashlib
import importlib.util
import pickle
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / 'tests' / 'data'
MAX_SEED = 64 * 1024    # larger inputs slow every execution down


def fixtures():
    return sorted(p for p in DATA.rglob('*') if p.is_file() and p.suffix in ('.pth', '.pt'))


def make_attacks():
    """tools/make_attacks.py as a module, or None where it is missing."""
    path = ROOT / 'tools' / 'make_attacks.py'
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location('make_attacks', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def attacks():
    """(file name, bytes) of every attack in tools/make_attacks.py, made in memory."""
    module = make_attacks()
    if module is None:
        return []
    import tempfile
    with tempfile.TemporaryDirectory() as scratch:
        return [(a.file_name, a.build(Path(scratch) / 'canaries', scratch)) for a in module.ATTACKS]


def good_safetensors():
    """(name, bytes) of safetensors files the reference reader accepts: every dtype string,
    scalars, empty tensors, metadata (a tied weight's `removed: kept` among it), a header
    padded in front, non-ASCII names."""
    module = make_attacks()
    if module is None:
        return []
    st = module.safetensors
    bits = [('BOOL', 8), ('F4', 4), ('F6_E2M3', 6), ('F6_E3M2', 6), ('U8', 8), ('I8', 8),
            ('F8_E5M2', 8), ('F8_E4M3', 8), ('F8_E8M0', 8), ('F8_E4M3FNUZ', 8),
            ('F8_E5M2FNUZ', 8), ('I16', 16), ('U16', 16), ('F16', 16), ('BF16', 16), ('I32', 32),
            ('U32', 32), ('F32', 32), ('C64', 64), ('F64', 64), ('I64', 64), ('U64', 64)]
    header, offset = {}, 0
    for dtype, width in sorted(bits, key=lambda b: -b[1]):
        size = 4 * width // 8
        header[dtype.lower()] = {'dtype': dtype, 'shape': [2, 2], 'data_offsets': [offset, offset + size]}
        offset += size
    every = st(header, bytes(range(256)) * (offset // 256) + bytes(range(offset % 256)))
    tied = st({'__metadata__': {'format': 'pt', 'lm_head.weight': 'embed.weight'},
               'embed.weight': {'dtype': 'F32', 'shape': [2, 3], 'data_offsets': [0, 24]}},
              bytes(24))
    odd = st({'scalar': {'dtype': 'I64', 'shape': [], 'data_offsets': [0, 8]},
              'empty': {'dtype': 'F16', 'shape': [0, 7], 'data_offsets': [8, 8]},
              'also_empty': {'dtype': 'BF16', 'shape': [3, 0], 'data_offsets': [8, 8]},
              'n\u00e4me \u2603': {'dtype': 'U8', 'shape': [3], 'data_offsets': [8, 11]}},
             bytes(11))
    padded = st(b'\n\t {"__metadata__":null,"x":{"shape":[1],"dtype":"F64","extra":[1,{}],'
                b'"data_offsets":[0,8]}}\r\n', bytes(8))
    return [('good_every_dtype.safetensors', every), ('good_tied_metadata.safetensors', tied),
            ('good_scalar_empty_unicode.safetensors', odd), ('good_padded.safetensors', padded),
            ('good_empty.safetensors', b'\x08' + bytes(7) + b'{}      ')]


def pickles_of_python_objects():
    """Every opcode family CPython writes, in every protocol."""
    class Plain:
        pass
    shared = [1, 2]
    recursive = []
    recursive.append(recursive)
    values = [
        None, True, False, 0, 1, -1, 255, 256, 65535, 65536, -2**31, 2**31, 2**63, -2**64,
        10**40, 0.5, float('inf'), 'text', 'ünïcødé \u2603 \U0001f600', b'bytes', bytearray(b'ba'),
        (), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), [], [1, 'a', None], {}, {'a': 1, 'b': [2]},
        set(), {1, 2}, frozenset({3}), [shared, shared], recursive,
        collections.OrderedDict([('module.weight', 1), ('module.bias', 2)]),
        {'state_dict': collections.OrderedDict(a=1), 'epoch': 3}, list(range(2500)),
        {str(i): i for i in range(1200)}, complex(1, 2), slice(1, 2, 3),
    ]
    out = []
    for protocol in range(0, 6):
        for i, value in enumerate(values):
            try:
                out.append((f'py_p{protocol}_{i}', pickle.dumps(value, protocol=protocol)))
            except Exception:   # noqa: BLE001 - a value a protocol cannot write
                pass
    return out


def zip_member(path, suffix):
    """The stored bytes of the first member named *SUFFIX, CRC unchecked (some fixtures
    are damaged on purpose)."""
    raw = Path(path).read_bytes() if not isinstance(path, bytes) else path
    import io
    import struct
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            for info in z.infolist():
                if info.filename.endswith(suffix) and info.compress_type == zipfile.ZIP_STORED:
                    start = info.header_offset
                    name_len, extra_len = struct.unpack('<HH', raw[start + 26:start + 30])
                    data = start + 30 + name_len + extra_len
                    return raw[data:data + info.compress_size]
    except (zipfile.BadZipFile, struct.error, ValueError):
        pass
    return None


RULE_FILES = [
    b'preset = "unwrap"\n\n[[rule]]\nstrip = "module."\n',
    b'[[rule]]\nreplace = ["backbone.", "encoder."]\n\n[[rule]]\ndrop = \'aux_head\\..*\'\n',
    b'[[rule]]\nregex = ["^(.*)\\\\.gamma$", "\\\\1.weight"]\n[[rule]]\nkeep = "encoder\\\\..*"\n',
    b'[[rule]]\nadd-prefix = "model."\n[[rule]]\ndrop-component = "_fsdp_wrapped_module"\n',
    b'preset = "none"\n',
    b'# comment only\n',
]


def seeds():
    out = collections.defaultdict(list)
    for path in fixtures():
        raw = path.read_bytes()
        name = str(path.relative_to(DATA)).replace('/', '_')
        for target in ('checkpoint', 'convert'):
            out[target].append((name, raw))
        if zipfile.is_zipfile(path):
            out['zip'].append((name, raw))
            pkl = zip_member(path, '/data.pkl')
            if pkl is not None:
                out['pickle'].append((name + '.data.pkl', pkl))
        elif raw:
            out['pickle'].append((name, raw))   # legacy: the decoder reads the first pickle
    for name, raw in good_safetensors():
        for target in ('safetensors', 'checkpoint', 'convert'):
            out[target].append((name, raw))
    for name, raw in attacks():
        if len(raw) > MAX_SEED:
            continue    # the million-MARK kind: replayed by the e2e cases, too slow to mutate
        for target in ('checkpoint', 'convert'):
            out[target].append(('attack_' + name, raw))
        if name.endswith('.safetensors'):
            out['safetensors'].append(('attack_' + name, raw))
            continue
        if raw[:2] == b'PK':
            out['zip'].append(('attack_' + name, raw))
            pkl = zip_member(raw, '.pkl')
            if pkl is not None:
                out['pickle'].append(('attack_' + name + '.pkl', pkl))
        else:
            out['pickle'].append(('attack_' + name, raw))
    out['pickle'] += pickles_of_python_objects()
    # HF shard indexes: the checkpoint and convert targets read them from memory (refused
    # after parsing: their shards are files); hf_index's own seeds are tests/corpus/hf_index.
    for path in sorted((ROOT / 'tests' / 'corpus' / 'hf_index').glob('seed-*')):
        for target in ('checkpoint', 'convert'):
            out[target].append(('hf_index_' + path.name, path.read_bytes()))
    out['rule_file'] += [(f'rules_{i}.toml', text) for i, text in enumerate(RULE_FILES)]
    out['rule_file'] += [(p.name, p.read_bytes()) for p in sorted((DATA / 'rules').glob('*'))
                         if p.is_file()]
    return out


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(argv[1])
    for target, items in seeds().items():
        folder = root / target
        folder.mkdir(parents=True, exist_ok=True)
        seen = set()
        for name, raw in items:
            digest = hashlib.sha1(raw).hexdigest()
            if digest in seen:
                continue
            seen.add(digest)
            (folder / name).write_bytes(raw)
        print(f'{target}: {len(seen)} seeds in {folder}')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
