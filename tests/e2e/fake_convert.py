#!/usr/bin/python3
"""JUDGE SELF-TEST ONLY: a slow Python stand-in for the ckpt-convert binary.

It implements the CLI contract of /work/shared/DESIGN.md with torch.load/torch.save so the
e2e judge (cases.py, judge.py, run_case.py) can be tested before, and independently of, the
C++ tool:

    /usr/bin/python3 tests/e2e/selftest.py           # every case against this fake

It is not a reference implementation and not shipped. It never unpickles a global outside
an allowlist (so os.system payloads are refused, not run). FAKE_CONVERT_BUG=<name> makes it
misbehave in one specific way, to check that the judge notices (see selftest.py).
"""
import io
import os
import pickle
import pickletools
import sys
import tarfile
import tempfile
import traceback
import types
import warnings
import zipfile
from collections import OrderedDict

BUG = os.environ.get('FAKE_CONVERT_BUG', '')
PROG = 'ckpt-convert'


class Fail(Exception):
    def __init__(self, code, msg):
        super().__init__(msg)
        self.code = code


# ----------------------------------------------------------------------------- arguments

def parse(argv):
    o = dict(device='cpu', location='cpu', ops=[], preset='unwrap', extract=None, dry_run=False,
             force=False, verify=True)
    pos = []
    it = iter(argv)
    for a in it:
        def value():
            try:
                return next(it)
            except StopIteration:
                raise Fail(2, f'{a}: missing value') from None
        if a == '--device':
            o['device'] = value()
        elif a == '--location':
            o['location'] = value()
        elif a == '--strip':
            o['ops'].append(('strip', value()))
        elif a == '--add-prefix':
            o['ops'].append(('add', value()))
        elif a == '--preset':
            o['preset'] = value()
            if o['preset'] not in ('unwrap', 'none'):
                raise Fail(2, f'--preset: unknown preset: {o["preset"]}')
        elif a == '--extract':
            o['extract'] = True
        elif a.startswith('--extract='):
            o['extract'] = a.split('=', 1)[1]
        elif a == '--dry-run':
            o['dry_run'] = True
        elif a == '--force':
            o['force'] = True
        elif a == '--no-verify':
            o['verify'] = False
        elif a.startswith('-') and a != '-':
            raise Fail(2, f'{a}: unknown option: see --help')
        else:
            pos.append(a)
    if len(pos) != 2:
        raise Fail(2, f'usage: expected IN OUT, got {len(pos)} argument(s)')
    return pos[0], pos[1], o


# ----------------------------------------------------------------------------- rules

DROP = ('_fsdp_wrapped_module', '_checkpoint_wrapped_module')


def rewrite_key(k, o):
    if o['preset'] == 'unwrap':
        k = '.'.join(p for p in k.split('.') if p not in DROP)
        while k.startswith(('module.', '_orig_mod.')):
            k = k.split('.', 1)[1]
    for op, p in o['ops']:
        if op == 'strip' and k.startswith(p):
            k = k[len(p):]
        elif op == 'add':
            k = p + k
    return k


def rewrite_prefix(p, o):
    form = rewrite_key(p + '.' if p else '', o)
    return form[:-1] if form.endswith('.') else form


# ----------------------------------------------------------------------------- reading

SAFE = {'collections.OrderedDict', 'argparse.Namespace', 'numpy.core.multiarray.scalar',
        'numpy.core.multiarray._reconstruct', 'numpy.ndarray', 'numpy.dtype', '_codecs.encode',
        'torch._utils._rebuild_tensor_v2', 'torch._utils._rebuild_parameter', 'torch.Size'}


def safe_global(name):
    return name in SAFE or (name.startswith('torch.') and name.endswith('Storage'))


class SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if not safe_global(f'{module}.{name}'):
            raise Fail(1, f'refusing to import {module}.{name}')
        return super().find_class(module, name)


SAFE_PICKLE = types.ModuleType('fake_safe_pickle')
SAFE_PICKLE.Unpickler = SafeUnpickler
SAFE_PICKLE.load = lambda f, **kw: SafeUnpickler(f, **kw).load()


def scan_globals(path, pkl):
    try:
        for op, arg, _ in pickletools.genops(pkl):
            if op.name in ('GLOBAL', 'INST') and not safe_global(arg.replace(' ', '.')):
                if BUG == 'run_pickle':
                    continue
                raise Fail(1, f'{path}: unsafe pickle: refusing to call {arg.replace(" ", ".")}')
            if op.name == 'STACK_GLOBAL':
                raise Fail(1, f'{path}: unsupported pickle: STACK_GLOBAL')
    except (ValueError, EOFError, UnicodeDecodeError) as e:
        raise Fail(1, f'{path}: corrupt pickle: {e}') from None


LEGACY_MAGIC = pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2)


def check_input(path):
    """Decide the format and reject what the tool rejects. Returns 'zip' or 'legacy'."""
    import torch
    size = os.path.getsize(path)
    if size == 0:
        raise Fail(1, f'{path}: cannot read checkpoint: empty file')
    with open(path, 'rb') as f:
        head = f.read(64)
    if tarfile.is_tarfile(path):
        raise Fail(1, f'{path}: unsupported format: tar archive (torch <= 0.3); load and re-save it with torch')
    if head.startswith(b'PK\x03\x04'):
        try:
            z = zipfile.ZipFile(path)
        except zipfile.BadZipFile as e:
            raise Fail(1, f'{path}: cannot read zip archive: truncated or damaged ({e})') from None
        with z:
            names = z.namelist()
            if any(n.endswith('/constants.pkl') for n in names):
                raise Fail(1, f'{path}: unsupported format: TorchScript archive (use torch.jit.load)')
            bad = z.testzip()
            if bad:
                raise Fail(1, f'{path}: corrupt record {bad}: CRC mismatch')
            pkl_name = next((n for n in names if n.endswith('/data.pkl')), None)
            if pkl_name is None:
                raise Fail(1, f'{path}: not a PyTorch checkpoint: no data.pkl record')
            prefix = pkl_name[:-len('data.pkl')]
            pkl = z.read(pkl_name)
            scan_globals(path, pkl)
            pids = []

            class Scan(SafeUnpickler):
                def persistent_load(self, pid):
                    pids.append(pid)
                    return torch.storage.TypedStorage(pid[4], dtype=pid[1].dtype)

            try:
                with warnings.catch_warnings():
                    warnings.simplefilter('ignore')
                    Scan(io.BytesIO(pkl)).load()
            except Fail as e:
                raise Fail(1, f'{path}: unsafe pickle: {e}') from None
            except Exception as e:  # noqa: BLE001
                raise Fail(1, f'{path}: corrupt pickle: {e}') from None
            sizes = {i.filename: i.file_size for i in z.infolist()}
            for pid in pids:
                rec = f'{prefix}data/{pid[2]}'
                need = pid[4] * torch._utils._element_size(pid[1].dtype)
                if rec not in sizes:
                    raise Fail(1, f'{path}: missing record data/{pid[2]}: archive is incomplete')
                if sizes[rec] < need:
                    raise Fail(1, f'{path}: storage data/{pid[2]} too short: {sizes[rec]} bytes, need {need}')
        return 'zip'
    if head.startswith(LEGACY_MAGIC[:len(head)]) or head.startswith(b'\x80\x02\x8a\x0a'):
        return 'legacy'
    raise Fail(1, f'{path}: not a PyTorch checkpoint (neither zip nor legacy format)')


def load(path):
    import torch
    locations = {}
    if BUG == 'run_pickle':             # executes the pickle, then pretends to refuse it
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                torch.load(path, map_location='cpu')
        except Exception:  # noqa: BLE001
            pass
        raise Fail(1, f'{path}: unsafe pickle: refusing to call os.system / posix.system')

    def remember(storage, loc):
        locations[storage.data_ptr()] = loc
        return storage
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            obj = torch.load(path, map_location=remember, pickle_module=SAFE_PICKLE)
    except Fail as e:
        raise Fail(1, f'{path}: unsafe pickle: {e}') from None
    except Exception as e:  # noqa: BLE001
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise Fail(1, f'{path}: cannot read checkpoint: {first}') from None
    return obj, locations


# ----------------------------------------------------------------------------- rewriting

def is_state_dict(x):
    import torch
    if not isinstance(x, dict):
        return False
    if isinstance(x, OrderedDict) and hasattr(x, '_metadata'):
        return True
    return bool(x) and all(isinstance(k, str) for k in x) and all(isinstance(v, torch.Tensor) for v in x.values())


def rewrite(obj, o, path, changes):
    import torch
    if is_state_dict(obj):
        new = type(obj)()
        origin = {}
        for k, v in obj.items():
            nk = rewrite_key(k, o)
            if nk in new and BUG != 'no_collision_check':
                raise Fail(1, f'{path}: keys collide: {origin[nk]!r} and {k!r} both become {nk!r}')
            origin[nk] = k
            if BUG == 'break_sharing':
                v = v.clone()
            if BUG == 'contiguous':
                v = v.contiguous()
            if BUG == 'plus_zero' and v.is_floating_point():
                v = v + 0          # -0.0 becomes 0.0
            new[nk] = v
            if nk != k:
                changes.append((k, nk))
        md = getattr(obj, '_metadata', None)
        if md is not None:
            nm = OrderedDict()
            for p, val in md.items():
                q = p if BUG == 'keep_metadata_keys' else rewrite_prefix(p, o)
                if BUG == 'first_metadata_wins' and q in nm:
                    continue
                nm[q] = val
            if BUG != 'drop_metadata':
                new._metadata = nm
        return new
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, dict):
        new = type(obj)()
        for k, v in obj.items():
            new[k] = rewrite(v, o, path, changes)
        if hasattr(obj, '__dict__') and vars(obj):
            new.__dict__.update(vars(obj))
        return new
    if isinstance(obj, list):
        return [rewrite(v, o, path, changes) for v in obj]
    if isinstance(obj, tuple):
        return tuple(rewrite(v, o, path, changes) for v in obj)
    return obj


def extract(obj, key, path):
    if key is not True:
        if not isinstance(obj, dict) or key not in obj:
            raise Fail(1, f'{path}: --extract={key}: no such entry')
        return obj[key]
    if isinstance(obj, dict) and not is_state_dict(obj):
        for k in ('state_dict', 'model', 'model_state_dict', 'net', 'module'):
            if k in obj and isinstance(obj[k], dict):
                return obj[k]
    if is_state_dict(obj):
        return obj
    raise Fail(1, f'{path}: --extract: no model state dict found')


# ----------------------------------------------------------------------------- writing

def save(obj, tmp, o, locations):
    import torch
    real = torch.serialization.location_tag

    def tag(storage):
        if o['location'] == 'keep' or BUG == 'keep_location':
            return locations.get(storage.data_ptr(), 'cpu')
        return o['location']
    torch.serialization.location_tag = tag
    try:
        torch.save(obj, tmp)
    finally:
        torch.serialization.location_tag = real


def verify(tmp, expected):
    import torch
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        back = torch.load(tmp, map_location='cpu', pickle_module=SAFE_PICKLE)

    def raw(t):
        return b'' if t.numel() == 0 else t.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()

    def walk(a, b):
        if isinstance(a, torch.Tensor):
            return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and raw(a) == raw(b)
        if isinstance(a, dict):
            return isinstance(b, dict) and list(a) == list(b) and all(walk(a[k], b[k]) for k in a)
        if isinstance(a, (list, tuple)):
            return len(a) == len(b) and all(walk(x, y) for x, y in zip(a, b))
        return True
    return walk(expected, back)


def device_available(dev):
    import torch
    if dev == 'cpu':
        return True
    if dev.startswith('cuda'):
        idx = int(dev.split(':')[1]) if ':' in dev else 0
        return torch.cuda.is_available() and idx < torch.cuda.device_count()
    return False


def run(argv):
    inp, out, o = parse(argv)
    if not os.path.isfile(inp):
        raise Fail(1, f'{inp}: cannot open: no such file')
    if os.path.exists(out) and os.path.samefile(inp, out) or os.path.realpath(inp) == os.path.realpath(out):
        if BUG != 'allow_same_file':
            raise Fail(1, f'{inp}: refusing to convert: same file as output {out}')
    if os.path.exists(out) and not o['force'] and not o['dry_run']:
        raise Fail(1, f'{out}: output exists: pass --force to replace it')
    if not device_available(o['device']):
        raise Fail(4, f'{inp}: device unavailable: {o["device"]} (no such CUDA device here)')
    if BUG == 'run_pickle':
        load(inp)
    check_input(inp)
    obj, locations = load(inp)
    if BUG == 'drop_optimizer' and isinstance(obj, dict):
        obj.pop('optimizer', None)
    if o['extract'] and BUG != 'no_extract':
        obj = extract(obj, o['extract'], inp)
    changes = []
    obj = rewrite(obj, o, inp, changes)
    if o['dry_run'] and BUG != 'dry_run_writes':
        for old, new in changes:
            print(f'{old} -> {new}')
        print(f'{len(changes)} key(s) would change; nothing written')
        return 0
    fd, tmp = tempfile.mkstemp(prefix='.ckpt-convert-', suffix='.tmp', dir=os.path.dirname(os.path.abspath(out)))
    os.close(fd)
    try:
        save(obj, tmp, o, locations)
        if o['verify'] and not verify(tmp, obj):
            raise Fail(3, f'{out}: verification failed: output differs from input')
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp) and BUG != 'leave_tmp':
            os.unlink(tmp)
    return 0


def main():
    try:
        return run(sys.argv[1:])
    except Fail as e:
        if BUG == 'leave_tmp' and len(sys.argv) > 2:
            try:
                open(os.path.join(os.path.dirname(os.path.abspath(sys.argv[2])), '.partial'), 'wb').close()
            except OSError:
                pass
        if BUG == 'traceback':
            traceback.print_exc()
        msg = ' '.join(str(e).split())
        print(f'{PROG}: error: {msg}', file=sys.stderr)
        if BUG == 'multi_line_error':
            print(f'{PROG}: note: see --help', file=sys.stderr)
        return 3 if BUG == 'wrong_exit_code' else e.code
    except Exception as e:  # noqa: BLE001
        print(f'{PROG}: error: internal: {type(e).__name__}: {" ".join(str(e).split())}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
