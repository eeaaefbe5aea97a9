#!/usr/bin/python3
"""Write the deterministic checkpoint fixtures used by the ckpt-convert e2e tests.

    /usr/bin/python3 tools/make_fixtures.py --out DIR [--large]

Without --large: the small fixtures (committed under tests/data/) and the bad inputs
under DIR/bad/. With --large: also the torchvision ones (tens of MB, generated at build
time, never committed). Needs torch 1.13 + torchvision + numpy: use /usr/bin/python3.

Every recipe is a small function below, registered in SMALL, LARGE or BAD. Each one seeds
torch/numpy itself, so the values do not depend on which recipes ran before. The files are
byte-for-byte reproducible (the legacy file's storage keys, which torch derives from memory
addresses, are renumbered; TorchScript debug records, which hold absolute source paths, are
dropped).
"""
import argparse
import io
import os
import pickle
import pickletools
import struct
import sys
import tarfile
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.dont_write_bytecode = True     # keep __pycache__ out of the source tree
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / 'tests' / 'e2e'))
import models  # noqa: E402  (tests/e2e/models.py, shared with the judge)

CANARY_OS = '/tmp/ckpt_convert_canary'          # os_system.pth: `touch` this if executed
CANARY_POSIX = '/tmp/ckpt_convert_canary_posix'  # posix_system.pth


# ----------------------------------------------------------------------------- helpers

def seed(n):
    torch.manual_seed(n)
    np.random.seed(n)


def trained_tiny_cnn(n):
    """A seeded TinyCNN after one forward pass in train mode, so BN running stats and
    num_batches_tracked are not their defaults."""
    seed(n)
    m = models.TinyCNN()
    m.train()
    with torch.no_grad():
        m(torch.randn(4, 3, 8, 8))
    return m


def dp(module):
    """nn.DataParallel on a CPU-only machine just wraps: keys get 'module.'."""
    return nn.DataParallel(module)


def save(obj, path, **kw):
    # torch names the zip's top folder after the file's stem, so save to the final name
    torch.save(obj, str(path), **kw)


def zip_records(path):
    with zipfile.ZipFile(path) as z:
        return [(i, z.read(i.filename)) for i in z.infolist()]


def rewrite_zip(src, dst, mutate, rename=lambda name: name):
    """Copy the zip SRC to DST (STORED, same dates) passing each record's bytes through
    mutate(name, data) -> bytes or None (drop the record), and its name through rename."""
    with zipfile.ZipFile(dst, 'w', zipfile.ZIP_STORED) as w:
        for info, data in zip_records(src):
            data = mutate(info.filename, data)
            if data is None:
                continue
            zi = zipfile.ZipInfo(rename(info.filename), date_time=info.date_time)
            zi.compress_type = zipfile.ZIP_STORED
            zi.external_attr = info.external_attr
            w.writestr(zi, data)


def data_records(path):
    """{'data/<key>': (zip name, size)} of a torch zip checkpoint."""
    out = {}
    for info, data in zip_records(path):
        parts = info.filename.split('/')
        if len(parts) == 3 and parts[1] == 'data':
            out['data/' + parts[2]] = (info.filename, len(data))
    return out


def load_cpu(path):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return torch.load(str(path), map_location='cpu')


def expect_load_fails(path, what):
    try:
        load_cpu(path)
    except Exception:  # noqa: BLE001 - any failure is what we want
        return
    raise SystemExit(f'make_fixtures: {path}: expected torch.load to fail ({what})')


def normalize_legacy_keys(path):
    """torch's legacy writer keys storages by memory address (str(storage._cdata)) and
    writes them in the order of those keys, so the bytes differ from run to run. Renumber
    the keys 0, 1, ... in order of first use in the object pickle and write the storages in
    that order. Keys only occur as BINUNICODE strings in the object pickle and in the
    key-list pickle, and protocol-2 pickles hold no offsets, so re-framing them is safe."""
    raw = Path(path).read_bytes()
    f = io.BytesIO(raw)
    for _ in range(3):                      # magic, protocol version, sys_info
        pickle.load(f)
    obj_start = f.tell()
    first_use = {}                          # old key -> element size, in order of first use

    class Scan(pickle.Unpickler):
        def persistent_load(self, pid):
            _, storage_type, key, _, numel, _ = pid
            dtype = storage_type.dtype
            first_use.setdefault(key, torch._utils._element_size(dtype))
            return torch.storage.TypedStorage(numel, dtype=dtype)

    Scan(f).load()
    keys_start = f.tell()
    old_keys = pickle.load(f)
    chunks = {}
    for k in old_keys:                      # int64 numel, then numel * element size bytes
        start = f.tell()
        n, = struct.unpack('<q', f.read(8))
        f.seek(n * first_use[k], io.SEEK_CUR)
        chunks[k] = raw[start:f.tell()]
    assert f.tell() == len(raw) and set(first_use) == set(old_keys)
    new = {k: str(i) for i, k in enumerate(first_use)}

    segment = raw[obj_start:keys_start]
    obj_pickle = bytearray()
    last = 0
    for op, arg, pos in pickletools.genops(segment):
        if op.name == 'BINUNICODE' and arg in new:
            obj_pickle += segment[last:pos]
            enc = new[arg].encode()
            obj_pickle += b'X' + struct.pack('<I', len(enc)) + enc
            last = pos + 5 + len(arg.encode())
    obj_pickle += segment[last:]
    key_pickle = pickle.dumps(list(new.values()), protocol=2)
    data = b''.join(chunks[k] for k in first_use)
    Path(path).write_bytes(raw[:obj_start] + bytes(obj_pickle) + key_pickle + data)


def tensors_equal(a, b):
    if a.keys() != b.keys():
        return False
    return all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- small

def dp_tiny_cnn(out):
    """DataParallel(TinyCNN).state_dict(): 'module.' keys, BN buffers, _metadata."""
    save(dp(trained_tiny_cnn(1)).state_dict(), out / 'dp_tiny_cnn.pth')


def named_storages(out):
    """dp_tiny_cnn.pth with storages 0, 1 and 8 named 'w', '007' and '99' (records and
    persistent ids alike), as torch.save never names them; torch.load reads them by name."""
    renamed = {'0': 'w', '1': '007', '8': '99'}
    tmpdir = out / 'named_storages.tmp'
    tmpdir.mkdir(exist_ok=True)
    tmp = tmpdir / 'named_storages.pth'  # torch names the archive's top folder after the stem
    sd = dp(trained_tiny_cnn(1)).state_dict()
    save(sd, tmp)

    def patch_pickle(name, data):
        if not name.endswith('/data.pkl'):
            return data
        for old, new in renamed.items():  # each key is one BINUNICODE in the persistent ids
            old_op = b'X' + struct.pack('<I', len(old)) + old.encode()
            assert data.count(old_op) == 1, (old, data.count(old_op))
            data = data.replace(old_op, b'X' + struct.pack('<I', len(new)) + new.encode())
        return data

    def rename(name):
        folder, *rest = name.split('/')
        if len(rest) == 2 and rest[0] == 'data' and rest[1] in renamed:
            return f'{folder}/data/{renamed[rest[1]]}'
        return name

    p = out / 'named_storages.pth'
    rewrite_zip(tmp, p, patch_pickle, rename)
    tmp.unlink()
    tmpdir.rmdir()
    assert tensors_equal(load_cpu(p), sd)
    assert {n.split('/')[-1] for n in zipfile.ZipFile(p).namelist()} >= set(renamed.values())


def imagenet_checkpoint(out):
    """pytorch/examples imagenet save_checkpoint layout, after one real SGD step."""
    m = trained_tiny_cnn(2)
    model = dp(m)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.StepLR(sgd, step_size=30, gamma=0.1)
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 8, 8)), torch.tensor([1, 2, 3, 4]))
    sgd.zero_grad()
    loss.backward()
    sgd.step()
    sched.step()
    ckpt = {
        'epoch': 3,
        'arch': 'tiny_cnn',
        'state_dict': model.state_dict(),
        'best_acc1': torch.tensor(71.5),
        'optimizer': sgd.state_dict(),
        'scheduler': sched.state_dict(),
    }
    assert all('momentum_buffer' in s for s in ckpt['optimizer']['state'].values())
    save(ckpt, out / 'imagenet_checkpoint.pth')


def legacy_dp(out):
    """DataParallel(TinyCNN) state dict in the pre-1.6 (non-zip) format."""
    sd = dp(trained_tiny_cnn(3)).state_dict()
    p = out / 'legacy_dp.pth'
    save(sd, p, _use_new_zipfile_serialization=False)
    normalize_legacy_keys(p)
    back = load_cpu(p)
    assert not zipfile.is_zipfile(p) and tensors_equal(back, sd) and back._metadata == sd._metadata


def orig_mod_module(out):
    """torch.compile(DataParallel(model)) layout: '_orig_mod.module.<k>'."""
    sd = models.OptimizedModuleStandIn(dp(trained_tiny_cnn(4))).state_dict()
    assert list(sd._metadata)[:4] == ['', '_orig_mod', '_orig_mod.module', '_orig_mod.module.conv']
    save(sd, out / 'orig_mod_module.pth')


def module_orig_mod(out):
    """DataParallel(torch.compile(model)) layout: 'module._orig_mod.<k>'."""
    sd = dp(models.OptimizedModuleStandIn(trained_tiny_cnn(5))).state_dict()
    assert list(sd._metadata)[:4] == ['', 'module', 'module._orig_mod', 'module._orig_mod.conv']
    save(sd, out / 'module_orig_mod.pth')


def fsdp_style(out):
    """FSDP/activation-checkpoint wrapper components at the start and in the middle of
    keys: '_fsdp_wrapped_module.layers.1._fsdp_wrapped_module._checkpoint_wrapped_module.weight'
    for the plain 'layers.1.weight'."""
    seed(6)
    plain = models.Plain()
    plain.train()
    with torch.no_grad():
        plain(torch.randn(5, 6))
    layers = plain.layers
    layers[0] = models.FSDPStandIn(layers[0])
    layers[1] = models.FSDPStandIn(models.CheckpointWrapperStandIn(layers[1]))
    layers[2] = models.CheckpointWrapperStandIn(layers[2])
    sd = models.FSDPStandIn(plain).state_dict()
    assert '_fsdp_wrapped_module.layers.1._fsdp_wrapped_module._checkpoint_wrapped_module.bias' in sd
    save(sd, out / 'fsdp_style.pth')


def tied_weights(out):
    """DataParallel(TinyLM): 'module.embed.weight' and 'module.lm_head.weight' share one
    storage in the file."""
    seed(7)
    sd = dp(models.TinyLM()).state_dict()
    p = out / 'tied_weights.pth'
    save(sd, p)
    back = load_cpu(p)
    assert back['module.embed.weight'].storage().data_ptr() == back['module.lm_head.weight'].storage().data_ptr()


def cuda3_tagged(out):
    """DataParallel(TinyCNN) state dict whose storages are tagged 'cuda:3' (as if saved on
    GPU 3), produced on a CPU machine by patching torch.serialization.location_tag."""
    sd = dp(trained_tiny_cnn(8)).state_dict()
    p = out / 'cuda3_tagged.pth'
    real = torch.serialization.location_tag
    torch.serialization.location_tag = lambda storage: 'cuda:3'
    try:
        save(sd, p)
    finally:
        torch.serialization.location_tag = real
    locations = []
    torch.load(str(p), map_location=lambda s, loc: (locations.append(loc), s)[1])
    assert locations and set(locations) == {'cuda:3'}, locations
    if not torch.cuda.is_available() or torch.cuda.device_count() < 4:
        try:
            torch.load(str(p))
        except RuntimeError as e:
            assert 'CUDA' in str(e), e
        else:
            raise SystemExit('make_fixtures: cuda3_tagged.pth loaded without map_location')


def dtypes(out):
    """One 'module.<dtype>' tensor per dtype, with NaN/inf/-0.0 in the float ones (so only a
    bitwise comparison passes)."""
    seed(9)
    sd = OrderedDict()
    specials = torch.tensor([float('nan'), float('inf'), float('-inf'), -0.0])
    for dt in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        sd['module.' + str(dt)[6:]] = torch.cat([torch.randn(6).to(dt), specials.to(dt)])
    for dt in (torch.complex64, torch.complex128):
        sd['module.' + str(dt)[6:]] = torch.complex(torch.randn(5), torch.randn(5)).to(dt)
    sd['module.bool'] = torch.rand(7) > 0.5
    sd['module.uint8'] = torch.randint(0, 256, (2, 3), dtype=torch.uint8)
    sd['module.int8'] = torch.randint(-128, 128, (5,), dtype=torch.int8)
    sd['module.int16'] = torch.randint(-2**15, 2**15, (5,), dtype=torch.int16)
    sd['module.int32'] = torch.randint(-2**31, 2**31, (5,), dtype=torch.int32)
    sd['module.int64'] = torch.tensor([-2**63, 2**63 - 1, 0, 1, -1], dtype=torch.int64)
    save(sd, out / 'dtypes.pth')


def views(out):
    """Non-contiguous, offset, shared, 0-dim, empty and expanded tensors."""
    seed(10)
    base = torch.arange(24, dtype=torch.float32).view(4, 6)
    other = torch.randn(11)
    w = torch.randn(3, 4)
    sd = OrderedDict()
    sd['module.base'] = base
    sd['module.transposed'] = base.t()          # stride (1, 6), shares base's storage
    sd['module.rows'] = base[1:]                # storage offset 6, shares base's storage
    sd['module.stride2'] = other[1::2]          # offset 1, stride 2; `other` itself not saved
    sd['module.scalar'] = torch.tensor(3.25)    # 0-dim
    sd['module.empty'] = torch.empty(0)         # numel 0
    sd['module.expanded'] = torch.randn(3).expand(4, 3)  # stride (0, 1)
    sd['module.view_a'] = w[0]                  # two views of one storage, base not saved
    sd['module.view_b'] = w[:, 1]               # offset 1, stride 4
    p = out / 'views.pth'
    save(sd, p)
    back = load_cpu(p)
    assert back['module.rows'].storage_offset() == 6 and back['module.view_b'].stride() == (4,)


def namespace_numpy(out):
    """Checkpoint holding argparse.Namespace and numpy objects next to the state dict."""
    sd = dp(trained_tiny_cnn(11)).state_dict()
    ckpt = {
        'args': argparse.Namespace(lr=0.1, arch='tiny_cnn', epochs=90),
        'np_float': np.float64(0.25),
        'np_int': np.int64(7),
        'np_array': np.arange(6, dtype=np.float32),
        'epoch': 5,
        'state_dict': sd,
    }
    save(ckpt, out / 'namespace_numpy.pth')


def clean_cpu(out):
    """A plain TinyCNN state dict: nothing to rewrite."""
    save(trained_tiny_cnn(12).state_dict(), out / 'clean_cpu.pth')


def bearpaw_vgg(out):
    """bearpaw/pytorch-classification layout: only `features` is DataParallel, so keys are
    'features.module.0.weight' ... next to 'classifier.weight'; saved as bearpaw's
    save_checkpoint does ({'epoch', 'arch', 'state_dict', 'best_acc', 'optimizer'}), after
    one real SGD step (momentum buffers)."""
    seed(18)
    model = models.VGGLike()
    model.features = dp(model.features)
    model.train()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 8, 8)), torch.tensor([1, 2, 3, 4]))
    sgd.zero_grad()
    loss.backward()
    sgd.step()
    sd = model.state_dict()
    assert 'features.module.0.weight' in sd and 'classifier.weight' in sd
    assert 'features.module' in sd._metadata and 'features.module.1' in sd._metadata
    ckpt = {'epoch': 4, 'arch': 'vgg_like', 'state_dict': sd, 'best_acc': 71.5,
            'optimizer': sgd.state_dict()}
    save(ckpt, out / 'bearpaw_vgg.pth')


def _lightning_module(n):
    """LightningModule stand-in (attribute `model`) around a trained TinyCNN, and an SGD
    optimizer after one real step on it."""
    lit = models.LightningModuleStandIn(trained_tiny_cnn(n))
    sgd = torch.optim.SGD(lit.parameters(), lr=0.1, momentum=0.9)
    loss = nn.functional.cross_entropy(lit(torch.randn(4, 3, 8, 8)), torch.tensor([1, 2, 3, 4]))
    sgd.zero_grad()
    loss.backward()
    sgd.step()
    return lit, sgd


def lightning(out):
    """A PyTorch Lightning checkpoint built by hand (no lightning package): 'state_dict' has
    'model.<k>' keys and _metadata '', 'model', 'model.conv' ..., next to epoch, global_step,
    optimizer_states, lr_schedulers, hparams."""
    lit, sgd = _lightning_module(19)
    sd = lit.state_dict()
    assert list(sd._metadata)[:3] == ['', 'model', 'model.conv'] and 'model.bn.running_mean' in sd
    ckpt = {
        'epoch': 3,
        'global_step': 300,
        'pytorch-lightning_version': '2.1.0',
        'state_dict': sd,
        'optimizer_states': [sgd.state_dict()],
        'lr_schedulers': [],
        'hparams_name': 'kwargs',
        'hyper_parameters': {'lr': 0.1},
    }
    save(ckpt, out / 'lightning.pth')


def lightning_fabric(out):
    """Lightning Fabric layout: a state dict whose keys are '_forward_module.model.<k>' (a
    _FabricModule stand-in, attribute `_forward_module`, around the LightningModule)."""
    lit, _ = _lightning_module(20)
    sd = models.FabricModuleStandIn(lit).state_dict()
    assert list(sd._metadata)[:3] == ['', '_forward_module', '_forward_module.model']
    assert '_forward_module.model.conv.weight' in sd
    save(sd, out / 'lightning_fabric.pth')


def backbone_aux(out):
    """BackboneAux state dict: 'backbone.0.weight' ..., 'head.*' and 'aux_head.*'. With
    rules/backbone_to_encoder.toml (backbone. -> encoder., drop aux_head.*) it loads into
    EncoderNet."""
    seed(21)
    m = models.BackboneAux()
    m.train()
    with torch.no_grad():
        m(torch.randn(4, 3, 8, 8))
    sd = m.state_dict()
    assert int(sd['backbone.1.num_batches_tracked']) == 1
    save(sd, out / 'backbone_aux.pth')


SMALL = [dp_tiny_cnn, named_storages, imagenet_checkpoint, legacy_dp, orig_mod_module, module_orig_mod,
         fsdp_style, tied_weights, cuda3_tagged, dtypes, views, namespace_numpy, clean_cpu,
         bearpaw_vgg, lightning, lightning_fabric, backbone_aux]


# ----------------------------------------------------------------------------- large

def dp_resnet18(out):
    seed(100)
    save(dp(models.build('resnet18')).state_dict(), out / 'dp_resnet18.pth')


def dp_mobilenet_v3_small(out):
    seed(101)
    save(dp(models.build('mobilenet_v3_small')).state_dict(), out / 'dp_mobilenet_v3_small.pth')


LARGE = [dp_resnet18, dp_mobilenet_v3_small]


# ----------------------------------------------------------------------------- bad

def bad_empty(out):
    (out / 'empty.pth').write_bytes(b'')


def bad_text(out):
    """A git-lfs pointer: what a checkout without `git lfs pull` leaves instead of weights."""
    (out / 'text.pth').write_text(
        'version https://git-lfs.github.com/spec/v1\n'
        'oid sha256:4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b\n'
        'size 46830571\n')


def bad_tar(out):
    """The torch <= 0.3 tar format (members sys_info, pickle, tensors, storages), holding
    {'module.fc.weight', 'module.fc.bias'}. torch 1.13 still reads it; ckpt-convert refuses."""
    seed(13)
    weight, bias = torch.randn(2, 3), torch.randn(2)
    p2 = dict(protocol=2)
    sys_info = pickle.dumps(dict(protocol_version=1001, little_endian=True,
                                 type_sizes=dict(short=2, int=4, long=4)), **p2)

    class TensorRef:                       # pickled as a persistent id: str(tensor key)
        def __init__(self, key):
            self.key = key

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return str(obj.key) if isinstance(obj, TensorRef) else None

    buf = io.BytesIO()
    P(buf, **p2).dump(OrderedDict([('module.fc.weight', TensorRef(1)), ('module.fc.bias', TensorRef(2))]))
    obj_pickle = buf.getvalue()

    storages = io.BytesIO()
    storages.write(pickle.dumps(2, **p2))
    tensors = io.BytesIO()
    tensors.write(pickle.dumps(2, **p2))
    for key, t in ((1, weight), (2, bias)):
        skey = 100 + key
        storages.write(pickle.dumps((skey, 'cpu', torch.FloatStorage), **p2))
        storages.write(struct.pack('<q', t.numel()) + t.contiguous().numpy().tobytes())
        tensors.write(pickle.dumps((key, skey, torch.FloatTensor), **p2))
        tensors.write(struct.pack('<i', t.dim()) + b'\0' * 4)
        tensors.write(struct.pack(f'<{t.dim()}q', *t.shape))
        tensors.write(struct.pack(f'<{t.dim()}q', *t.stride()))
        tensors.write(struct.pack('<q', t.storage_offset()))
    storages.write(pickle.dumps([], **p2))  # storage views

    p = out / 'tar.pth'
    with tarfile.open(p, 'w', format=tarfile.PAX_FORMAT) as tar:
        for name, data in (('sys_info', sys_info), ('pickle', obj_pickle),
                           ('tensors', tensors.getvalue()), ('storages', storages.getvalue())):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode = len(data), 0, 0o644
            tar.addfile(ti, io.BytesIO(data))
    back = load_cpu(p)
    assert torch.equal(back['module.fc.weight'], weight) and torch.equal(back['module.fc.bias'], bias)


def bad_torchscript(out):
    """torch.jit.save(torch.jit.script(TinyCNN)), minus the *.debug_pkl records (they hold
    absolute source paths; TorchScript loads fine without them)."""
    seed(14)
    tmpdir = out / 'torchscript.tmp'
    tmpdir.mkdir(exist_ok=True)
    tmp = tmpdir / 'torchscript.pt'       # torch names the archive's top folder 'torchscript'
    torch.jit.save(torch.jit.script(models.TinyCNN().eval()), str(tmp))
    p = out / 'torchscript.pt'
    rewrite_zip(tmp, p, lambda n, d: None if n.endswith('.debug_pkl') else d)
    tmp.unlink()
    tmpdir.rmdir()
    torch.jit.load(str(p))
    assert any(n.endswith('/constants.pkl') for n in zipfile.ZipFile(p).namelist())


def bad_truncated(out):
    """dp_tiny_cnn.pth cut short: keep the first 10, 100, half, len-30 and len-1 bytes."""
    raw = (out.parent / 'dp_tiny_cnn.pth').read_bytes()
    for name, n in (('10', 10), ('100', 100), ('half', len(raw) // 2),
                    ('cut30', len(raw) - 30), ('cut1', len(raw) - 1)):
        p = out / f'truncated_{name}.pth'
        p.write_bytes(raw[:n])
        expect_load_fails(p, 'truncated')


def bad_flipped_pickle(out):
    """dp_tiny_cnn.pth with one byte of its data.pkl record XOR 0xFF: the opcode nearest
    the middle of the pickle whose flipped value is no pickle opcode (so the file is
    damaged whatever CRC checks a reader does or skips)."""
    src = out.parent / 'dp_tiny_cnn.pth'
    raw = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as z:
        info = next(i for i in z.infolist() if i.filename.endswith('/data.pkl'))
        pkl = z.read(info)
    # local file header: 30 bytes + name + extra, then the (STORED) data
    name_len, extra_len = struct.unpack('<HH', raw[info.header_offset + 26:info.header_offset + 30])
    data_off = info.header_offset + 30 + name_len + extra_len
    assert bytes(raw[data_off:data_off + len(pkl)]) == pkl
    valid = {ord(op.code.encode('latin-1')) for op in pickletools.opcodes}
    positions = [pos for op, _, pos in pickletools.genops(pkl) if (pkl[pos] ^ 0xFF) not in valid]
    pos = min(positions, key=lambda q: abs(q - len(pkl) // 2))
    raw[data_off + pos] ^= 0xFF
    p = out / 'flipped_pickle.pth'
    p.write_bytes(bytes(raw))
    expect_load_fails(p, 'flipped pickle byte')


def _middle_data_record(src):
    recs = data_records(src)
    keys = sorted(recs, key=lambda k: int(k.split('/')[1]))
    return recs[keys[len(keys) // 2]]


def bad_missing_record(out):
    """dp_tiny_cnn.pth rewritten (zipfile, STORED) without one data/<key> record."""
    src = out.parent / 'dp_tiny_cnn.pth'
    victim, _ = _middle_data_record(src)
    sanity = out / 'rewrite_sanity.tmp.pth'
    rewrite_zip(src, sanity, lambda n, d: d)          # the untouched rewrite loads fine
    assert tensors_equal(load_cpu(sanity), load_cpu(src))
    sanity.unlink()
    p = out / 'missing_record.pth'
    rewrite_zip(src, p, lambda n, d: None if n == victim else d)
    expect_load_fails(p, 'missing record')


def bad_short_storage(out):
    """dp_tiny_cnn.pth rewritten with the conv weight's data/<key> record cut to half.
    NOTE: torch 1.13's own torch.load does NOT notice this (it reads past the record)."""
    src = out.parent / 'dp_tiny_cnn.pth'
    recs = data_records(src)
    victim = max(recs.values(), key=lambda r: r[1])[0]     # the largest storage
    p = out / 'short_storage.pth'
    rewrite_zip(src, p, lambda n, d: d[:len(d) // 2] if n == victim else d)


class _Reduce:
    """Pickles as REDUCE(func, args): the classic pickle code-execution payload."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _pickle_module_writing_os_system():
    """A pickle module for torch.save whose Pickler names os.system 'os.system' (the
    stdlib pickler writes its real home, 'posix.system', on Linux)."""
    import types

    class Pickler(pickle._Pickler):  # pure-Python pickler, so save_global can be overridden
        def save_global(self, obj, name=None):
            if obj is os.system:
                self.write(pickle.GLOBAL + b'os\nsystem\n')
                self.memoize(obj)
                return
            super().save_global(obj, name)

    mod = types.ModuleType('os_system_pickle')
    mod.Pickler = Pickler
    return mod


def _assert_global_call(path, module, name):
    with zipfile.ZipFile(path) as z:
        pkl = z.read(next(n for n in z.namelist() if n.endswith('/data.pkl')))
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(pkl)]
    assert ('GLOBAL', f'{module} {name}') in ops and ('REDUCE', None) in ops, ops


def bad_os_system(out):
    """A real checkpoint with one value that is REDUCE(os.system, ('touch CANARY',)).
    Never load it with pickle: it runs the command."""
    sd = dp(trained_tiny_cnn(15)).state_dict()
    ckpt = {'epoch': 1, 'state_dict': sd, 'hook': _Reduce(os.system, (f'touch {CANARY_OS}',))}
    p = out / 'os_system.pth'
    save(ckpt, p, pickle_module=_pickle_module_writing_os_system())
    _assert_global_call(p, 'os', 'system')


def bad_posix_system(out):
    """Same payload as the stdlib pickler writes it on Linux: GLOBAL 'posix system'."""
    sd = dp(trained_tiny_cnn(16)).state_dict()
    ckpt = {'epoch': 1, 'state_dict': sd, 'hook': _Reduce(os.system, (f'touch {CANARY_POSIX}',))}
    p = out / 'posix_system.pth'
    save(ckpt, p)
    _assert_global_call(p, 'posix', 'system')


def bad_colliding(out):
    """'module.fc.weight' and 'fc.weight': stripping 'module.' makes two keys equal."""
    seed(17)
    save(OrderedDict([('module.fc.weight', torch.randn(2, 3)), ('fc.weight', torch.randn(2, 3))]),
         out / 'colliding.pth')


BAD = [bad_empty, bad_text, bad_tar, bad_torchscript, bad_truncated, bad_flipped_pickle,
       bad_missing_record, bad_short_storage, bad_os_system, bad_posix_system, bad_colliding]


# ----------------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', required=True, type=Path, help='output directory')
    ap.add_argument('--large', action='store_true', help='also write the torchvision fixtures')
    args = ap.parse_args(argv)
    if os.environ.get('PYTHONHASHSEED') != '0':
        # TorchScript's code emitter orders some attributes by str hash: pin the hash seed
        os.environ['PYTHONHASHSEED'] = '0'
        os.execv(sys.executable, [sys.executable, os.path.abspath(__file__)] + sys.argv[1:])
    out = args.out
    (out / 'bad').mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    recipes = SMALL + (LARGE if args.large else [])
    for recipe in recipes:
        recipe(out)
    for recipe in BAD:                      # bad ones derive from dp_tiny_cnn.pth
        recipe(out / 'bad')
    print(f'make_fixtures: wrote {len(recipes)} fixtures and {len(BAD)} bad-input recipes to {out}')


if __name__ == '__main__':
    main()
