"""An independent, strict safetensors reader for the e2e tests: the judge of what ckpt-convert
reads and writes in that format. Written from the format's rules (the safetensors crate's
`read_metadata` / `Metadata::validate`, and its writer's `prepare` / `serialize`); it shares no
code with the tool and needs only the standard library, numpy and torch (1.13). The Python
`safetensors` package is not used.

    read_safetensors(path) -> (metadata, tensors)
        metadata: the `__metadata__` str -> str dict, or None when the header has none (or
        it is null). tensors: an OrderedDict name -> torch.Tensor in data-offset order (ties,
        which only zero-sized tensors can make, in header order), each a copy of its bytes,
        little-endian. `tensors.dtypes` maps each name to its safetensors dtype string
        ('F32', 'BF16', 'F8_E4M3', ...). A dtype torch 1.13 lacks comes back as its raw
        bytes in a torch.uint8 tensor: shape `shape` for the 1-byte F8_* types, `shape +
        [itemsize]` for U16, U32 and U64, flat (the bytes in order) for the sub-byte F4 and
        F6_*; `tensors.dtypes` says which.
        Raises ValueError('<path>: <where>: <why>') on the first rule of the reference reader
        the file breaks, checked in the reference's order: at least 8 bytes; the 8-byte
        little-endian header length N at most 100_000_000 and inside the file; the header
        valid UTF-8; exactly one JSON object (JSON whitespace around it allowed, nothing
        else, no NaN/Infinity or lone surrogate escapes, at most 127 nested containers);
        plus, stricter than the reference: no key twice in any object; `__metadata__` null
        or an object of strings; each other key a tensor object with a known dtype string
        (exact case), a shape of non-negative integers and data_offsets of two, each fitting
        64 bits (JSON true/false, -0 and 1.0 are no such integers), unknown fields ignored;
        then in (begin, end) order each tensor starting where the previous one ended (so no
        hole, overlap or non-zero start), begin <= end, shape x dtype bits without 64-bit
        overflow, whole bytes, and exactly end - begin; and the last end at the end of the
        file (no trailing bytes).

    header_bytes(path) -> bytes
        The header exactly as stored: the N bytes after the 8-byte length, the JSON text and
        its padding. Checks only that N is sane (the first three rules above).

    check_writer_layout(path) -> (metadata, tensors)
        Reads the file with read_safetensors, then raises AssertionError naming the first
        difference from what the reference writer (`safetensors.torch.save_file`) writes for
        the same tensors and metadata: N a multiple of 8, the JSON padded with 0 to 7 ASCII
        spaces and nothing else; tensors in the buffer sorted by dtype, descending in the
        crate's enum order, then by name (bytewise UTF-8), so header order is buffer order;
        compact JSON (serde_json's: no spaces, `"` `\\` and control characters escaped,
        non-ASCII raw), `__metadata__` first when present, each tensor written as
        {"dtype":..,"shape":[..],"data_offsets":[b,e]} in that field order. The keys inside
        `__metadata__` are taken in the file's order (the reference writes them in HashMap
        order). Returns what read_safetensors returned.
"""
import collections
import json
from pathlib import Path

MAX_HEADER = 100_000_000
MAX_DEPTH = 127           # serde_json's recursion limit: 128 levels, exclusive
U64_MAX = 2**64 - 1

# The crate's `enum Dtype` in declaration order (the writer sorts on it): name -> bits.
DTYPE_BITS = collections.OrderedDict([
    ('BOOL', 8), ('F4', 4), ('F6_E2M3', 6), ('F6_E3M2', 6), ('U8', 8), ('I8', 8),
    ('F8_E5M2', 8), ('F8_E4M3', 8), ('F8_E8M0', 8), ('F8_E4M3FNUZ', 8), ('F8_E5M2FNUZ', 8),
    ('I16', 16), ('U16', 16), ('F16', 16), ('BF16', 16), ('I32', 32), ('U32', 32), ('F32', 32),
    ('C64', 64), ('F64', 64), ('I64', 64), ('U64', 64),
])
DTYPE_RANK = {name: rank for rank, name in enumerate(DTYPE_BITS)}


class Tensors(collections.OrderedDict):
    """name -> torch.Tensor, in data-offset order; `dtypes`: name -> safetensors dtype string."""

    def __init__(self):
        super().__init__()
        self.dtypes = {}


def _fail(path, where, why):
    raise ValueError(f'{path}: {where}: {why}')


def _header_length(path, raw):
    """N, after rules 1-3 (at least 8 bytes, N <= 10^8, the header inside the file)."""
    if len(raw) < 8:
        _fail(path, 'header', f'the file is {len(raw)} bytes, too short for the 8-byte '
                              f'header length (header too small)')
    n = int.from_bytes(raw[:8], 'little')
    if n > MAX_HEADER:
        _fail(path, 'header', f'header length {n} is over {MAX_HEADER} (header too large)')
    if 8 + n > len(raw):
        _fail(path, 'header', f'header length {n} runs past the end of the {len(raw)}-byte '
                              f'file (invalid header length)')
    return n


def header_bytes(path):
    raw = Path(path).read_bytes()
    n = _header_length(path, raw)
    return raw[8:8 + n]


def _pairs_without_duplicates(path):
    def hook(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                _fail(path, 'header', f'key {key!r} appears twice in one JSON object')
            seen.add(key)
        return collections.OrderedDict(pairs)
    return hook


def _no_constant(path):
    def hook(name):
        _fail(path, 'header', f'invalid JSON: {name} is not a JSON number')
    return hook


class _NotU64:
    """A JSON integer that is negative (`-0` included) or longer than 20 digits."""

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return self.text


def _parse_int(text):
    return _NotU64(text) if text.startswith('-') or len(text) > 20 else int(text)


def _depth_and_surrogates(value):
    """The nesting depth in containers, and whether a string holds a lone surrogate (a
    `\\ud800` escape, which Python's json accepts and serde_json refuses); no recursion, the
    header may be deep."""
    deepest, surrogate, todo = 0, False, [(value, 0)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, dict):
            todo.extend((v, depth + 1) for v in item.values())
            todo.extend((k, depth + 1) for k in item)
        elif isinstance(item, list):
            todo.extend((v, depth + 1) for v in item)
        else:
            if isinstance(item, str):
                try:
                    item.encode('utf-8')
                except UnicodeEncodeError:
                    surrogate = True
            continue
        deepest = max(deepest, depth + 1)
    return deepest, surrogate


def _is_u64(value):
    return type(value) is int and 0 <= value <= U64_MAX     # noqa: E721 - bool is an int


def _parse_json(path, text):
    """Rule 5: one JSON object, strictly (duplicates refused at every level)."""
    try:
        value = json.loads(text, object_pairs_hook=_pairs_without_duplicates(path),
                           parse_constant=_no_constant(path), parse_int=_parse_int)
    except RecursionError:
        _fail(path, 'header', f'invalid JSON: nested deeper than {MAX_DEPTH} levels')
    except json.JSONDecodeError as e:
        _fail(path, 'header', f'invalid JSON at header byte {e.pos}: {e.msg}')
    if not isinstance(value, dict):
        _fail(path, 'header', f'the header is a JSON {type(value).__name__}, not an object')
    depth, surrogate = _depth_and_surrogates(value)
    if depth > MAX_DEPTH:
        _fail(path, 'header', f'invalid JSON: nested deeper than {MAX_DEPTH} levels')
    if surrogate:
        _fail(path, 'header', 'invalid JSON: a \\u escape of a lone surrogate')
    return value


def _entry(path, name, info):
    where = f'tensor {name!r}'
    if not isinstance(info, dict):
        _fail(path, where, f'its entry is a JSON {type(info).__name__}, not an object')
    for field in ('dtype', 'shape', 'data_offsets'):
        if field not in info:
            _fail(path, where, f'no {field}')
    dtype = info['dtype']
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        _fail(path, where, f'unknown dtype {dtype!r}')
    shape = info['shape']
    if not isinstance(shape, list) or not all(_is_u64(d) for d in shape):
        _fail(path, where, f'shape {shape!r} is not a list of non-negative 64-bit integers')
    offsets = info['data_offsets']
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_u64(o) for o in offsets):
        _fail(path, where, f'data_offsets {offsets!r} is not a list of two non-negative '
                           f'64-bit integers')
    return dtype, list(shape), tuple(offsets)


def _nbytes(path, name, dtype, shape):
    count = 1
    for d in shape:
        count *= d
        if count > U64_MAX:
            _fail(path, f'tensor {name!r}', f'shape {shape} overflows 64 bits')
    bits = count * DTYPE_BITS[dtype]
    if bits > U64_MAX:
        _fail(path, f'tensor {name!r}', f'shape {shape} of {dtype} overflows 64 bits')
    if bits % 8:
        _fail(path, f'tensor {name!r}', f'shape {shape} of {dtype} is {bits} bits, not whole bytes')
    return bits // 8


def _validate(path, raw):
    """(n, metadata, [(name, dtype, shape, begin, end)] in data-offset order)."""
    n = _header_length(path, raw)
    try:
        text = raw[8:8 + n].decode('utf-8')
    except UnicodeDecodeError as e:
        _fail(path, 'header', f'invalid UTF-8 at file byte {8 + e.start}')
    header = _parse_json(path, text)
    metadata = header.get('__metadata__')
    if metadata is not None:
        if not isinstance(metadata, dict):
            _fail(path, '__metadata__', f'a JSON {type(metadata).__name__}, not an object')
        for key, value in metadata.items():
            if not isinstance(value, str):
                _fail(path, '__metadata__', f'the value of {key!r} is not a string: {value!r}')
        metadata = dict(metadata)
    entries = [(name,) + _entry(path, name, info)
               for name, info in header.items() if name != '__metadata__']
    entries = sorted(enumerate(entries), key=lambda e: (e[1][3], e[0]))
    start, out = 0, []
    for _, (name, dtype, shape, (begin, end)) in entries:
        if begin != start or end < begin:
            _fail(path, f'tensor {name!r}', f'invalid data_offsets [{begin}, {end}]: '
                  f'{"end before begin" if end < begin else "a hole" if begin > start else "an overlap"}'
                  f' (the previous tensor ends at {start})')
        size = _nbytes(path, name, dtype, shape)
        if end - begin != size:
            _fail(path, f'tensor {name!r}', f'data_offsets [{begin}, {end}] span {end - begin} '
                                            f'bytes, shape {shape} of {dtype} takes {size}')
        start = end
        out.append((name, dtype, shape, begin, end))
    if 8 + n + start != len(raw):
        _fail(path, 'data', f'the tensors cover {start} bytes of a {len(raw) - 8 - n}-byte '
                            f'buffer (file not fully covered)')
    return n, metadata, out


_TORCH_DTYPES = {  # safetensors name -> (numpy dtype, torch dtype name, view as)
    'BOOL': ('u1', 'bool'), 'U8': ('u1', 'uint8'), 'I8': ('i1', 'int8'),
    'I16': ('<i2', 'int16'), 'F16': ('<f2', 'float16'), 'BF16': ('<i2', 'bfloat16'),
    'I32': ('<i4', 'int32'), 'F32': ('<f4', 'float32'), 'C64': ('<c8', 'complex64'),
    'F64': ('<f8', 'float64'), 'I64': ('<i8', 'int64'),
}


def _tensor(dtype, shape, data):
    import numpy as np
    import torch
    if dtype in _TORCH_DTYPES:
        np_dtype, torch_name = _TORCH_DTYPES[dtype]
        array = np.frombuffer(data, dtype=np_dtype).copy()
        t = torch.from_numpy(array).reshape(shape)
        if torch_name in ('bool', 'bfloat16'):
            t = t.view(getattr(torch, torch_name))      # the bytes as they are
        return t
    raw = torch.from_numpy(np.frombuffer(data, dtype='u1').copy())
    bits = DTYPE_BITS[dtype]
    if bits < 8:
        return raw
    return raw.reshape(shape + ([bits // 8] if bits > 8 else []))


def read_safetensors(path):
    raw = Path(path).read_bytes()
    n, metadata, entries = _validate(path, raw)
    tensors = Tensors()
    base = 8 + n
    for name, dtype, shape, begin, end in entries:
        tensors[name] = _tensor(dtype, shape, raw[base + begin:base + end])
        tensors.dtypes[name] = dtype
    return metadata, tensors


def _json_string(text):
    """serde_json's compact string: `"`, `\\` and controls escaped, the rest raw."""
    return json.dumps(text, ensure_ascii=False)


def check_writer_layout(path):
    raw = Path(path).read_bytes()
    n, metadata, entries = _validate(path, raw)
    stored = raw[8:8 + n]
    text = stored.rstrip(b' ')
    padding = stored[len(text):]
    if n % 8:
        raise AssertionError(f'{path}: header length {n} is not a multiple of 8')
    if len(padding) > 7:
        raise AssertionError(f'{path}: {len(padding)} bytes of padding, the writer pads 0 to 7')
    by_name = {e[0]: e for e in entries}
    order = sorted(by_name, key=lambda name: (-DTYPE_RANK[by_name[name][1]], name.encode()))
    parts = []
    if metadata is not None:
        parts.append('"__metadata__":{' + ','.join(f'{_json_string(k)}:{_json_string(v)}'
                                                   for k, v in metadata.items()) + '}')
    offset = 0
    for name in order:
        _, dtype, shape, begin, end = by_name[name]
        if begin != offset:
            raise AssertionError(f'{path}: tensor {name!r} is at data_offsets [{begin}, {end}], '
                                 f'the writer puts it at {offset} (dtype descending, then name)')
        offset = end
        parts.append(f'{_json_string(name)}:{{"dtype":"{dtype}","shape":[{",".join(map(str, shape))}],'
                     f'"data_offsets":[{begin},{end}]}}')
    want = ('{' + ','.join(parts) + '}').encode('utf-8')
    if text != want:
        at = next((i for i, (a, b) in enumerate(zip(text, want)) if a != b), min(len(text), len(want)))
        raise AssertionError(f'{path}: header differs from the reference writer\'s at header byte '
                             f'{at}: {text[max(0, at - 20):at + 40]!r} vs {want[max(0, at - 20):at + 40]!r}')
    if len(stored) != (len(want) + 7) // 8 * 8:
        raise AssertionError(f'{path}: header of {len(want)} bytes padded to {len(stored)}, '
                             f'the writer pads to {(len(want) + 7) // 8 * 8}')
    return read_safetensors(path)
