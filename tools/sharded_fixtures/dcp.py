"""torch Distributed Checkpoint (DCP) folders written with torch 1.13 alone (docs/dcp.md has
the format): a `.metadata` pickle of stand-in
dataclasses registered under the real module paths (so the pickle names the globals torch
1.13, 2.0-2.2 and 2.3+ write), and `__<rank>_<k>.distcp` files of concatenated torch.save
blobs, one per item, located by `_StorageInfo(relative_path, offset, length)`.

Never imports torch.distributed._shard / .checkpoint (1.13's crash on Python 3.11, and 2.x's
do not exist here): the stand-in modules are registered in sys.modules first.

Each fixture is cross-checked here, independently of the reader: chunk volumes add up to
the tensor's, and every tensor is rebuilt from its slices with torch.load and compared
with the original before expected.pt is written.
"""
import dataclasses
import enum
import io
import json
import pathlib
import pickle
import shutil
import sys
import types
from pathlib import Path

import torch

BENCH_KINDS = ('dcp',)

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / 'tests' / 'e2e'))

OLD = 'torch.distributed._shard.checkpoint'          # 1.13
NEW = 'torch.distributed.checkpoint'                 # 2.0 and later
SHARD_TP = 'torch.distributed._shard.sharded_tensor.metadata'  # TensorProperties <= 2.2


def _module(name):
    """The stand-in module NAME (parents registered too)."""
    parts = name.split('.')
    for i in range(3, len(parts) + 1):
        sub = '.'.join(parts[:i])
        if sub not in sys.modules:
            sys.modules[sub] = types.ModuleType(sub)
    return sys.modules[name]


def _place(cls, module, name=None):
    name = name or cls.__name__
    cls.__module__ = module
    cls.__qualname__ = name
    cls.__name__ = name
    setattr(_module(module), name, cls)
    return cls


def _mem_format_enum(module, name):
    cls = enum.Enum(name, [('TORCH_CONTIGUOUS_FORMAT', 0), ('TORCH_CHANNELS_LAST', 1),
                           ('TORCH_PRESERVE_FORMAT', 2)], module=module, qualname=name)
    setattr(_module(module), name, cls)
    return cls


def _tensor_properties(module, enum_name):
    mem = _mem_format_enum(module, enum_name)

    @dataclasses.dataclass
    class TensorProperties:
        dtype: object
        layout: object = torch.strided
        requires_grad: bool = False
        memory_format: object = torch.contiguous_format
        pin_memory: bool = False

        def __getstate__(self):  # every version: a 5-tuple, the memory format as the enum
            return (self.dtype, self.layout, self.requires_grad,
                    mem.TORCH_CONTIGUOUS_FORMAT, self.pin_memory)

        def __setstate__(self, state):
            self.dtype, self.layout, self.requires_grad, _, self.pin_memory = state
    _place(TensorProperties, module)
    TensorProperties.mem = mem
    return TensorProperties


def _metadata_classes(module):
    ns = types.SimpleNamespace()

    @dataclasses.dataclass
    class ChunkStorageMetadata:
        offsets: torch.Size
        sizes: torch.Size

    @dataclasses.dataclass
    class TensorStorageMetadata:
        properties: object
        size: torch.Size
        chunks: list

    @dataclasses.dataclass
    class BytesStorageMetadata:
        pass

    @dataclasses.dataclass(frozen=True)
    class MetadataIndex:
        fqn: str
        offset: object = None
        index: object = dataclasses.field(hash=False, compare=False, default=None)

        def __init__(self, fqn, offset=None, index=None):  # the order upstream sets them
            object.__setattr__(self, 'fqn', fqn)
            object.__setattr__(self, 'index', index)
            if offset is not None:
                object.__setattr__(self, 'offset', torch.Size(offset))

    @dataclasses.dataclass
    class Metadata:
        state_dict_metadata: dict
        planner_data: object = None
        storage_data: object = None

    @dataclasses.dataclass
    class StorageMeta:
        checkpoint_id: object = None
        save_id: object = None
        load_id: object = None

    for cls in (ChunkStorageMetadata, TensorStorageMetadata, BytesStorageMetadata,
                MetadataIndex, Metadata, StorageMeta):
        setattr(ns, cls.__name__, _place(cls, module))
    return ns


def _storage_info_classes(module):
    @dataclasses.dataclass
    class _StorageInfo:
        relative_path: str
        offset: int
        length: int
    _place(_StorageInfo, module)
    return _StorageInfo


# The profiles: which classes a torch version pickles (§2.2's table).
_old = _metadata_classes(OLD + '.metadata')
_new = _metadata_classes(NEW + '.metadata')
_shard_tp = _tensor_properties(SHARD_TP, 'MEM_FORMAT_ENCODING')
_new_tp = _tensor_properties(NEW + '.metadata', '_MEM_FORMAT_ENCODING')
_old_si = _storage_info_classes(OLD + '.filesystem')
_new_si = _storage_info_classes(NEW + '.filesystem')


class _StorageInfoExt:
    """≈2.7+: `transform_descriptors`, and a __getstate__ that drops None fields."""

    def __init__(self, relative_path, offset, length, transform_descriptors=None):
        self.relative_path = relative_path
        self.offset = offset
        self.length = length
        self.transform_descriptors = transform_descriptors

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if v is not None}


_place(_StorageInfoExt, NEW + '.filesystem', '_StorageInfo')  # replaces _new_si's global


PROFILES = {
    '1.13': (_old, _shard_tp, _old_si),
    '2.0': (_new, _shard_tp, _StorageInfoExt),
    '2.3': (_new, _new_tp, _StorageInfoExt),
}


def _by_value(enum_cls):
    """Pickle ENUM_CLS's members by value, (cls, (value,)), as Pythons other than
    3.11.0-3.11.3 do (3.11.2 here pickles them by name through builtins.getattr)."""
    enum_cls.__reduce_ex__ = lambda self, proto: (enum_cls, (self.value,))


def _by_name(enum_cls):
    enum_cls.__reduce_ex__ = lambda self, proto: (getattr, (enum_cls, self.name))


class _Location:
    """torch.save with storages tagged TAG ('cuda:3'), as a GPU rank saves them."""

    def __init__(self, tag):
        self.tag = tag

    def __enter__(self):
        self.saved = torch.serialization.location_tag
        if self.tag:
            torch.serialization.location_tag = lambda storage: self.tag
        return self

    def __exit__(self, *exc):
        torch.serialization.location_tag = self.saved


def _blob(obj, tag=None):
    buf = io.BytesIO()
    with _Location(tag):
        torch.save(obj, buf)
    return buf.getvalue()


# ---- what to save -------------------------------------------------------------------

def _rows(size, ws):
    """ShardedTensor's dim-0 chunks (ChunkShardingSpec): ceil(n/ws) rows each, trailing
    ranks without rows get no shard. [(rank, offsets, sizes)]."""
    step = -(-size[0] // ws)
    out = []
    for r in range(ws):
        lo, hi = r * step, min(size[0], (r + 1) * step)
        if lo < hi:
            out.append((r, (lo,) + (0,) * (len(size) - 1), (hi - lo,) + tuple(size[1:])))
    return out


def _boxes(size, mesh):
    """DTensor 2-D boxes over a MESH (a, b) of ranks: dims 0 and 1 split by ceil; a rank
    past the end holds a size-0 box, which DCP still records."""
    a, b = mesh
    s0, s1 = -(-size[0] // a), -(-size[1] // b)
    out = []
    for i in range(a):
        for j in range(b):
            lo0, hi0 = min(size[0], i * s0), min(size[0], (i + 1) * s0)
            lo1, hi1 = min(size[1], j * s1), min(size[1], (j + 1) * s1)
            out.append((i * b + j, (lo0, lo1) + (0,) * (len(size) - 2),
                        (hi0 - lo0, hi1 - lo1) + tuple(size[2:])))
    return out


def _whole(t, rank=0):
    return [(rank, (0,) * t.dim(), tuple(t.shape))]


def _flatten(obj, style):
    """[(path, leaf)] as DefaultSavePlanner(flatten_state_dict=True) flattens: mapping keys
    str()'d, list indices kept; STYLE '2.3': a container with no tensor below is one leaf;
    '2.4': every mapping is traversed, a list only when it holds a mapping or list that is."""
    out = []

    def has_tensor(v):
        if isinstance(v, torch.Tensor):
            return True
        if isinstance(v, dict):
            return any(has_tensor(x) for x in v.values())
        if isinstance(v, list):
            return any(has_tensor(x) for x in v)
        return False

    def terminal(v):
        if style == '2.3':
            return not has_tensor(v) or isinstance(v, torch.Tensor)
        if isinstance(v, dict):
            return False
        if isinstance(v, list):
            return all(not isinstance(e, (dict, list)) or terminal(e) for e in v) and \
                not any(isinstance(e, torch.Tensor) for e in v)
        return True

    def walk(path, v):
        if terminal(v):
            out.append((path, v))
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(path + (str(k),), x)
        else:
            for i, x in enumerate(v):
                walk(path + (i,), x)
    for k, v in obj.items():
        walk((str(k),), v)
    return out


class Run:
    """One DCP save being written: the items of each rank, then the files."""

    def __init__(self, profile, world, naming='per_rank'):
        self.profile, self.world, self.naming = profile, world, naming
        self.cls, self.tp, self.si = PROFILES[profile]
        self.tensors = []   # (fqn, tensor, chunks [(rank, offsets, sizes)], tag)
        self.objects = []   # (fqn, obj, rank)
        self.order = []     # every fqn, as added: state_dict_metadata's order
        self.planner_data = None
        self.transform = {}  # fqn -> descriptors
        self.storage_meta = None
        self.version = None

    def tensor(self, fqn, t, chunks=None, tag=None):
        chunks = chunks or _whole(t)
        vol = sum(_prod(s) for _, _, s in chunks)
        assert vol == t.numel(), f'{fqn}: chunk volumes {vol} != numel {t.numel()}'
        self.tensors.append((fqn, t, chunks, tag))
        self.order.append(fqn)

    def obj(self, fqn, value, rank=0):
        self.objects.append((fqn, value, rank))
        self.order.append(fqn)

    def write(self, folder, proto=4):
        folder.mkdir(parents=True, exist_ok=True)
        files = {}     # name -> bytearray
        counters = {}  # rank -> next file number (file per item)
        storage = {}   # MetadataIndex -> _StorageInfo
        C = self.cls

        def file_for(rank, n):
            if self.naming == 'per_item':
                k = counters.get(rank, 0)
                counters[rank] = k + 1
            elif self.naming == 'threads':
                k = n % 2
            else:
                k = 0
            return f'__{rank}_{k}.distcp'

        def put(rank, n, blob, key, fqn):
            name = file_for(rank, n)
            data = files.setdefault(name, bytearray())
            off = len(data)
            data += blob
            desc = self.transform.get(fqn)
            if self.si is _StorageInfoExt:
                info = _StorageInfoExt(name, off, len(blob), desc)
            else:
                info = self.si(name, off, len(blob))
            storage[key] = info
        n = 0
        for fqn, value, rank in self.objects:  # BYTE_IO first in each file
            put(rank, n, _blob(value), C.MetadataIndex(fqn), fqn)
            n += 1
        sdm = {}
        for fqn, t, chunks, tag in self.tensors:
            chunk_meta = []
            for i, (rank, off, size) in enumerate(chunks):
                piece = t[tuple(slice(o, o + s) for o, s in zip(off, size))].clone()
                put(rank, n, _blob(piece, tag.format(rank=rank) if tag else None),
                    C.MetadataIndex(fqn, off, i), fqn)
                n += 1
                chunk_meta.append(C.ChunkStorageMetadata(torch.Size(off), torch.Size(size)))
            sdm[fqn] = C.TensorStorageMetadata(self.tp(t.dtype), torch.Size(t.shape), chunk_meta)
        for fqn, value, rank in self.objects:
            sdm[fqn] = C.BytesStorageMetadata()
        meta = C.Metadata({f: sdm[f] for f in self.order}, self.planner_data, storage)
        if self.storage_meta is not None or self.version is not None:
            meta.storage_meta = self.storage_meta
            meta.version = self.version
        for name, data in files.items():
            (folder / name).write_bytes(bytes(data))
        (folder / '.metadata').write_bytes(pickle.dumps(meta, protocol=proto))
        _cross_check(folder, self)


def _prod(s):
    n = 1
    for x in s:
        n *= x
    return n


def _cross_check(folder, run):
    """Rebuilds every tensor from its slices with torch.load, as dcp_to_torch_save reads
    them, and compares with the original."""
    meta = pickle.loads((folder / '.metadata').read_bytes())
    for fqn, t, chunks, _ in run.tensors:
        full = torch.full(t.shape, float('nan')).to(t.dtype) if t.is_floating_point() \
            else torch.zeros(t.shape, dtype=t.dtype)
        for i, (rank, off, size) in enumerate(chunks):
            info = meta.storage_data[run.cls.MetadataIndex(fqn, off, i)]
            raw = (folder / info.relative_path).read_bytes()[info.offset:info.offset + info.length]
            piece = torch.load(io.BytesIO(raw), map_location='cpu')
            assert tuple(piece.shape) == tuple(size), (fqn, piece.shape, size)
            full[tuple(slice(o, o + s) for o, s in zip(off, size))] = piece
        assert torch.equal(full, t), f'{fqn}: slices do not rebuild the tensor'


# ---- the fixtures -------------------------------------------------------------------

def _adam(model, steps=2):
    """MODEL's Adam state after STEPS steps, keyed by parameter name, as FSDP's
    optim_state_dict / get_optimizer_state_dict give it to DCP."""
    torch.manual_seed(3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        opt.step()
    names = {id(p): n for n, p in model.named_parameters()}
    raw = opt.state_dict()
    ids = {i: names[id(p)] for i, p in enumerate(model.parameters())}
    state = {ids[i]: {k: v.clone() for k, v in s.items()} for i, s in raw['state'].items()}
    groups = [dict(g, params=[ids[i] for i in g['params']]) for g in raw['param_groups']]
    return {'state': state, 'param_groups': groups}


def _model(name, seed=13):
    import models
    torch.manual_seed(seed)
    m = models.build(name)
    for b in m.buffers():
        if b.is_floating_point():
            b.uniform_(0.5, 1.5)
    return m


def _sd(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _save_nested(run, obj, style, chunker):
    """Flattens OBJ (STYLE) into RUN: tensors chunked by CHUNKER(fqn, t), the other leaves
    BYTE_IO (dedup: given to rank 0)."""
    run.planner_data = {}
    for path, leaf in _flatten(obj, style):
        fqn = '.'.join(map(str, path))
        run.planner_data[fqn] = path
        if isinstance(leaf, torch.Tensor):
            run.tensor(fqn, leaf, *chunker(fqn, leaf))
        else:
            run.obj(fqn, leaf)


def _expected(out, obj, model=None, options=(), error=None):
    if obj is not None:
        torch.save(obj, out / 'expected.pt')
    (out / 'fixture.json').write_text(json.dumps(
        {'model': model, 'options': list(options), 'error': error}))


def t113_flat_rows(out):
    """torch 1.13: a flat state dict (no planner_data), fc.weight and conv.weight as
    ShardedTensors of uneven row shards on 3 ranks tagged cuda:N, the rest written by the
    coordinator, one file per item; enum pickled by value."""
    _by_value(_shard_tp.mem)
    sd = _sd(_model('tiny_cnn'))
    run = Run('1.13', 3, naming='per_item')
    for k, v in sd.items():
        if k in ('fc.weight', 'conv.weight'):
            run.tensor(k, v, _rows(v.shape, 3), tag='cuda:{rank}')
        else:
            run.tensor(k, v, tag='cuda:0')
    run.write(out / 'run')
    _by_name(_shard_tp.mem)
    _expected(out, sd, 'tiny_cnn')


def t113_bytes_with_tensors(out):
    """torch 1.13, nothing flattened: a nested 'model' dict is one BYTE_IO item whose
    torch.save holds tensors; a ShardedTensor at the top level; an int."""
    sd = _sd(_model('plain'))
    big = torch.arange(35, dtype=torch.float32).reshape(7, 5)
    run = Run('1.13', 2)
    run.obj('model', sd)
    run.tensor('big', big, _rows(big.shape, 2))
    run.obj('step', 7)
    run.write(out / 'run')
    _expected(out, {'model': sd, 'big': big, 'step': 7})


def t22_nested_adam(out):
    """torch 2.0-2.2: {'model', 'optim', 'epoch', 'note'} flattened the 2.3 way (a
    container without tensors is one BYTE_IO leaf), one file per rank, 3 ranks with the
    last one empty for a 2-row tensor; replicated tensors kept by the first plan (rank 0);
    enum pickled by name (builtins.getattr)."""
    model = _model('tiny_lm')
    obj = {'model': _sd(model), 'optim': _adam(model), 'epoch': 3, 'note': 'run-7',
           'ema': {'pair': torch.randn(2, 4)}}
    run = Run('2.0', 3)

    def chunker(fqn, t):
        if t.dim() >= 1 and t.shape[0] >= 2 and fqn.endswith(('weight', 'exp_avg', 'exp_avg_sq',
                                                              'pair')):
            return (_rows(t.shape, 3), 'cuda:{rank}')
        return (_whole(t), None)
    _save_nested(run, obj, '2.3', chunker)
    run.write(out / 'run')
    _expected(out, obj)


def t24_boxes_extract(out):
    """torch 2.4+: DTensor 2-D boxes on a 2x2 mesh (one box empty: 3 columns over 2 ranks
    of a width-1 tensor), bf16/fp16/int64 tensors, 2.4 flattening (every scalar its own
    item), replicated items spread over ranks (load-balanced dedup), two files per rank
    (thread_count 2), storage_meta with a PosixPath and a version; --extract gives the
    model's state dict."""
    model = _model('tiny_lm')
    sd = _sd(model)
    obj = {'model': sd, 'optimizer': _adam(model),
           'extra': {'half': torch.linspace(-2, 2, 12).to(torch.float16).reshape(3, 4),
                     'bf': torch.linspace(-1, 1, 10).to(torch.bfloat16).reshape(5, 2),
                     'ids': torch.arange(6, dtype=torch.int64).reshape(6, 1),
                     'lrs': [0.1, 0.01]}}
    run = Run('2.3', 4, naming='threads')
    spread = iter(range(10 ** 6))

    def chunker(fqn, t):
        if t.dim() >= 2:
            return (_boxes(t.shape, (2, 2)), 'cuda:{rank}')
        return (_whole(t, next(spread) % 4), None)
    _save_nested(run, obj, '2.4', chunker)
    run.objects = [(f, v, i % 4) for i, (f, v, _) in enumerate(run.objects)]
    run.storage_meta = _new.StorageMeta(pathlib.PosixPath('/ckpt/step-100'),
                                        'a2f1c0de-5e1d-4b7c-9a53-3c2d1f7e9b10', None)
    run.version = '1.0.0'
    run.write(out / 'run')
    torch.save(sd, out / 'expected.pt')
    _expected(out, None, 'tiny_lm', ['--extract'])


def t24_ten_ranks(out):
    """torch 2.3+: 10 ranks (file names sort __10_0 before __2_0), uneven row shards with
    empty trailing ranks, protocol 5 (Python 3.14), the whole nested output."""
    _by_value(_new_tp.mem)
    model = _model('vgg_like')
    obj = {'model': _sd(model), 'step': 5}
    run = Run('2.3', 11)

    def chunker(fqn, t):
        if t.dim() >= 1 and t.shape[0] >= 3:
            return (_rows(t.shape, 11), None)
        return (_whole(t, 10), None)
    _save_nested(run, obj, '2.4', chunker)
    run.write(out / 'run', proto=5)
    _by_name(_new_tp.mem)
    _expected(out, obj, None)


# ---- negatives: a good folder, spoiled ----------------------------------------------

def _small(out):
    sd = {'w': torch.arange(12, dtype=torch.float32).reshape(4, 3),
          'b': torch.arange(4, dtype=torch.float32)}
    run = Run('2.3', 2)
    run.tensor('w', sd['w'], _rows(sd['w'].shape, 2))
    run.tensor('b', sd['b'])
    run.obj('step', 1)
    return run


def neg_truncated(out):
    run = _small(out)
    run.write(out / 'run')
    f = out / 'run' / '__1_0.distcp'
    f.write_bytes(f.read_bytes()[:-100])
    _expected(out, None, error='__1_0.distcp')


def neg_missing_file(out):
    run = _small(out)
    run.write(out / 'run')
    (out / 'run' / '__1_0.distcp').unlink()
    _expected(out, None, error='__1_0.distcp')


def neg_not_covered(out):
    """w's chunks leave rows 2-3 out: its second chunk is dropped from .metadata."""
    run = _small(out)
    run.write(out / 'run')
    meta = pickle.loads((out / 'run' / '.metadata').read_bytes())
    meta.state_dict_metadata['w'].chunks.pop()
    (out / 'run' / '.metadata').write_bytes(pickle.dumps(meta, protocol=4))
    _expected(out, None, error='do not cover')


def neg_overlap(out):
    """w's second chunk claims rows 1-2: it overlaps the first."""
    run = _small(out)
    run.write(out / 'run')
    meta = pickle.loads((out / 'run' / '.metadata').read_bytes())
    chunk = meta.state_dict_metadata['w'].chunks[1]
    old = _new.MetadataIndex('w', chunk.offsets, 1)
    chunk.offsets = torch.Size([1, 0])
    meta.storage_data[_new.MetadataIndex('w', chunk.offsets, 1)] = meta.storage_data.pop(old)
    (out / 'run' / '.metadata').write_bytes(pickle.dumps(meta, protocol=4))
    _expected(out, None, error='overlap')


def neg_transform(out):
    run = _small(out)
    run.transform['w'] = ['stream.zstd/1']
    run.write(out / 'run')
    _expected(out, None, error='stream.zstd/1')


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ('echo pwned > /tmp/ckpt-convert-dcp-pwned',))


def neg_code_global(out):
    run = _small(out)
    run.write(out / 'run')
    # Spoiled after the cross-check, which would unpickle (and run) it.
    meta = pickle.loads((out / 'run' / '.metadata').read_bytes())
    meta.version = _Evil()
    (out / 'run' / '.metadata').write_bytes(pickle.dumps(meta, protocol=4))
    _expected(out, None, error='posix.system')  # os.system pickles as posix.system


FIXTURES = [t113_flat_rows, t113_bytes_with_tensors, t22_nested_adam, t24_boxes_extract,
            t24_ten_ranks, neg_truncated, neg_missing_file, neg_not_covered, neg_overlap,
            neg_transform, neg_code_global]


def write_all(out: Path):
    for make in FIXTURES:
        folder = out / make.__name__
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        make(folder)


def write_bench(kind, params, out: Path):
    """One DCP folder of PARAMS fp32 parameters, row-sharded on 2 ranks, with Adam's
    exp_avg and exp_avg_sq beside (as FSDP saves {'model', 'optimizer'}): written a
    tensor at a time so that the generator's memory stays near one tensor."""
    assert kind == 'dcp'
    folder = out / 'run'
    folder.mkdir(parents=True, exist_ok=True)
    C = _new
    cols = 1000
    per = params // 4
    shapes = [(per // cols, cols)] * 3 + [((params - 3 * (per // cols) * cols) // cols, cols)]
    handles = {r: open(folder / f'__{r}_0.distcp', 'wb') for r in range(2)}
    storage, sdm, planner = {}, {}, {}
    gen = torch.Generator().manual_seed(5)

    def put(fqn, t, path):
        chunks = _rows(t.shape, 2)
        metas = []
        for i, (rank, off, size) in enumerate(chunks):
            blob = _blob(t[off[0]:off[0] + size[0]].clone())
            f = handles[rank]
            storage[C.MetadataIndex(fqn, off, i)] = _StorageInfoExt(f.name.split('/')[-1],
                                                                    f.tell(), len(blob))
            f.write(blob)
            metas.append(C.ChunkStorageMetadata(torch.Size(off), torch.Size(size)))
        sdm[fqn] = C.TensorStorageMetadata(_new_tp(t.dtype), torch.Size(t.shape), metas)
        planner[fqn] = path
    for i, shape in enumerate(shapes):
        name = f'layers.{i}.weight'
        put(f'model.{name}', torch.randn(shape, generator=gen), ('model', name))
        for moment in ('exp_avg', 'exp_avg_sq'):
            put(f'optimizer.state.{name}.{moment}', torch.randn(shape, generator=gen),
                ('optimizer', 'state', name, moment))
    for f in handles.values():
        f.close()
    meta = C.Metadata(sdm, planner, storage)
    (folder / '.metadata').write_bytes(pickle.dumps(meta, protocol=4))
