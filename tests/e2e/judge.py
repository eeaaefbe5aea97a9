"""Machinery of the ckpt-convert e2e judge: running the binary, loading checkpoints without
running arbitrary pickle code, and comparing an output checkpoint with its input.

The cases themselves (one behaviour each) and the expectation tables are in cases.py;
run_case.py runs one case. Use /usr/bin/python3 (torch 1.13 + numpy).
"""
import argparse
import collections
import hashlib
import inspect
import os
import pickle
import pickletools
import re
import shutil
import struct
import subprocess
import sys
import types
import warnings
import zipfile
from pathlib import Path



class _ImportedOnUse:
    """A module imported when first used. Most refusal cases (attacks, faults, bad input)
    never need torch, whose import costs more than a second per case, and every case runs
    twice (the plain and the sanitizer build)."""

    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):
        import importlib
        return getattr(importlib.import_module(self._name), attr)


np = _ImportedOnUse('numpy')
torch = _ImportedOnUse('torch')

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))   # models.py, cases.py

def host_cases():
    """The cases.py module whose registry the cases_*.py modules join: `cases` when imported
    by run_case.py, `__main__` when cases.py runs as a script."""
    mod = sys.modules.get('cases')
    if mod is None:
        main = sys.modules.get('__main__')
        if main is not None and hasattr(main, 'CASES') and hasattr(main, 'judge_output'):
            return main
        import cases as mod    # imported on its own: cases.py imports the cases_*.py back
    return mod


ERROR_PREFIX = 'ckpt-convert: error: '
DOCS = Path(__file__).resolve().parent.parent.parent / 'docs'
# Never acceptable anywhere in the tool's output: crashes and uncaught exceptions.
FORBIDDEN_OUTPUT = ('Traceback', 'terminate called', 'Segmentation', 'Aborted', 'AddressSanitizer',
                    'core dumped', 'LeakSanitizer', 'runtime error:')


class CaseFailure(Exception):
    pass


class CaseSkipped(Exception):
    """This machine cannot stage the case (e.g. no permission to mount): run_case.py exits
    SKIP_EXIT, which CTest reports as skipped, not passed."""


SKIP_EXIT = 77


# ----------------------------------------------------------------------------- running

class Result:
    def __init__(self, cmd, rc, stdout, stderr):
        self.cmd, self.rc, self.stdout, self.stderr = cmd, rc, stdout, stderr

    def describe(self):
        def tail(s, n=4000):
            return s if len(s) <= n else '...' + s[-n:]
        import shlex
        return (f'  command: {shlex.join(str(c) for c in self.cmd)}\n'
                f'  exit code: {self.rc}\n'
                f'  stdout:\n{indent(tail(self.stdout))}\n'
                f'  stderr:\n{indent(tail(self.stderr))}')


def indent(s, pad='    | '):
    return '\n'.join(pad + line for line in s.splitlines()) if s else pad + '(empty)'


class Ctx:
    """What one case needs: the binary, the fixture dirs and a fresh work dir with
    work/in (copies of the inputs) and work/out (the output dir, empty before the run)."""

    def __init__(self, binary, data, large_data, work):
        self.binary = Path(binary).resolve()
        self.data = Path(data).resolve()
        self.large_data = Path(large_data).resolve() if large_data else None
        self.work = Path(work).resolve()
        self.in_dir = self.work / 'in'
        self.out_dir = self.work / 'out'
        self.last = None            # the last Result, shown with every failure
        self.timeout = 300

    def fixture(self, name, large=False, copy=True):
        """Path of a fixture; small ones are copied into work/in so that a tool that
        damages its input cannot damage the checked-in file."""
        if large:
            src = self.large_data / name if self.large_data else None
            if src is None or not src.is_file():
                raise CaseFailure(
                    f'large fixture missing: {src if src else name} (--large-data not given or not '
                    f'generated; run: /usr/bin/python3 tools/make_fixtures.py --out DIR --large)')
            return src
        src = self.data / name
        if not src.is_file():
            raise CaseFailure(f'fixture missing: {src} (run: /usr/bin/python3 tools/make_fixtures.py '
                              f'--out tests/data)')
        if not copy:
            return src
        dst = self.in_dir / Path(name).name
        shutil.copyfile(src, dst)
        return dst

    def run(self, *args, timeout=None):
        cmd = [str(self.binary)] + [str(a) for a in args]
        try:
            p = subprocess.run(cmd, cwd=self.work, stdin=subprocess.DEVNULL, capture_output=True,
                               timeout=timeout or self.timeout)
        except subprocess.TimeoutExpired as e:
            self.last = Result(cmd, 'TIMEOUT', _text(e.stdout), _text(e.stderr))
            raise CaseFailure(f'ckpt-convert did not finish within {timeout or self.timeout}s')
        self.last = Result(cmd, p.returncode, _text(p.stdout), _text(p.stderr))
        return self.last



def _text(b):
    return (b or b'').decode('utf-8', 'replace') if isinstance(b, (bytes, type(None))) else b


def check(cond, msg):
    if not cond:
        raise CaseFailure(msg)


def sha256(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def listdir(d):
    return sorted(os.listdir(d))


def check_clean_exit(r):
    """No signal, no crash text, whatever the exit code."""
    if isinstance(r.rc, int) and r.rc < 0:
        import signal
        try:
            name = signal.Signals(-r.rc).name
        except ValueError:
            name = str(-r.rc)
        raise CaseFailure(f'ckpt-convert was killed by signal {name}')
    for word in FORBIDDEN_OUTPUT:
        check(word not in r.stderr and word not in r.stdout, f'output contains {word!r}')


def check_schema(obj, schema_file):
    """OBJ is valid against docs/SCHEMA_FILE (a JSON Schema, draft 2020-12)."""
    try:
        import jsonschema
    except ImportError:
        raise CaseFailure('python module jsonschema missing: apt-get install python3-jsonschema') from None
    import json
    validator = jsonschema.Draft202012Validator(json.loads((DOCS / schema_file).read_text()))
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    check(not errors, f'not valid against {schema_file}: ' + '; '.join(
        f"at {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:200]}" for e in errors[:5]))


def check_one_error_line(r, must_contain=(), keywords=()):
    """stderr is exactly one non-empty line 'ckpt-convert: error: ...' that contains every
    string in must_contain and at least one of keywords (case-insensitive, at a word start)."""
    lines = r.stderr.splitlines()
    check(len(lines) == 1 and lines[0].strip(),
          f'stderr must be exactly one non-empty line, got {len(lines)} line(s)')
    line = lines[0]
    check(line.startswith(ERROR_PREFIX), f'stderr line does not start with {ERROR_PREFIX!r}')
    for s in must_contain:
        check(str(s) in line, f'stderr does not name {s}')
    if keywords:
        # case-insensitive, and not inside a longer word: 'tar' matches 'tar-format', not 'start'
        check(any(re.search(r'(?<![a-z0-9])' + re.escape(k), line, re.I) for k in keywords),
              f'stderr does not give the cause: expected (case-insensitive) one of {list(keywords)}')
    return line


# ----------------------------------------------------------------------------- loading

# Globals the judge lets pickle import when it loads with weights_only=False: torch's own,
# the containers, and the argparse/numpy/codecs objects the fixtures hold. Anything else
# (os.system ...) is refused, so the judge never runs code a bad output might carry.
_SAFE_GLOBAL_PREFIXES = ('torch.', 'collections.', 'numpy.', 'argparse.', '_codecs.', 'copyreg.')
_SAFE_GLOBALS = {'builtins.set', 'builtins.frozenset', 'builtins.complex', 'builtins.slice',
                 'builtins.bytearray', 'builtins.object', 'builtins.list', 'builtins.dict',
                 'builtins.tuple', 'builtins.int', 'builtins.float', 'builtins.str', 'builtins.bytes',
                 'numpy.dtype', 'numpy.ndarray'}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        full = f'{module}.{name}'
        if full in _SAFE_GLOBALS or (full.startswith(_SAFE_GLOBAL_PREFIXES)
                                     and not full.startswith(('torch.load', 'torch.hub', 'torch.jit'))):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f'judge refuses to import global {full}')


_safe_pickle = types.ModuleType('judge_safe_pickle')
_safe_pickle.Unpickler = _SafeUnpickler
_safe_pickle.load = lambda f, **kw: _SafeUnpickler(f, **kw).load()
_safe_pickle.__name__ = 'judge_safe_pickle'


def load(path, map_location=None):
    """torch.load(weights_only=False) with a pickle module that only imports safe globals."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return torch.load(str(path), map_location=map_location, pickle_module=_safe_pickle)


def load_weights_only(path, map_location=None):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return torch.load(str(path), map_location=map_location, weights_only=True)


def storage_locations(path):
    """The location tag of every storage in PATH, in the order torch restores them."""
    locs = []
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.load(str(path), map_location=lambda s, loc: (locs.append(loc), s)[1],
                   pickle_module=_safe_pickle)
    return locs


def zip_pickle(path):
    """The bytes of data.pkl of a zip checkpoint, or None for another format."""
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as z:
        names = [n for n in z.namelist() if n.endswith('data.pkl') and n.count('/') <= 1]
        return z.read(names[0]) if names else None


def _weights_only_opcodes():
    """Opcode names the installed torch's weights_only unpickler handles (read from its
    source, so this follows the torch version)."""
    src = inspect.getsource(torch._weights_only_unpickler.Unpickler.load)
    return set(re.findall(r'\b([A-Z][A-Z0-9_]*)\[0\]', src))


def weights_only_blockers(path):
    """Static reasons why torch.load(PATH, weights_only=True) cannot succeed with the
    installed torch: {'opcode BINFLOAT', 'global argparse.Namespace', ...}. Scans the whole
    pickle, so it lists every reason, not just the first the unpickler meets."""
    pkl = zip_pickle(path)
    check(pkl is not None, f'{path}: not a zip checkpoint, cannot scan its pickle')
    ok_ops = _weights_only_opcodes()
    allowed = set(torch._weights_only_unpickler._get_allowed_globals())
    out = set()
    for op, arg, _ in pickletools.genops(pkl):
        if op.name not in ok_ops:
            out.add(f'opcode {op.name}')
        if op.name == 'GLOBAL' and arg.replace(' ', '.') not in allowed:
            out.add('global ' + arg.replace(' ', '.'))
    return out


def blocker_in_error(msg):
    """The blocker a weights_only error message names, or None."""
    m = re.search(r'Unsupported operand (\d+)', msg)
    if m:
        code = chr(int(m.group(1)))
        names = [op.name for op in pickletools.opcodes if op.code == code]
        return f'opcode {names[0]}' if names else f'opcode #{m.group(1)}'
    m = re.search(r'Unsupported class (\S+)', msg)
    if m:
        return 'global ' + m.group(1)
    return None


# ----------------------------------------------------------------------------- key rules

DROP_COMPONENTS = ('_fsdp_wrapped_module', '_checkpoint_wrapped_module')
LEADING = ('module.', '_orig_mod.')


class Rules:
    """The judge's own model of ckpt-convert's key rules: the 'unwrap' preset (drop the
    FSDP/checkpoint components anywhere, then strip leading 'module.'/'_orig_mod.' any number
    of times), then the literal --strip/--add-prefix rules in command-line order."""

    def __init__(self, preset='unwrap', ops=()):
        self.preset, self.ops = preset, tuple(ops)

    def key(self, k):
        if self.preset == 'unwrap':
            k = '.'.join(p for p in k.split('.') if p not in DROP_COMPONENTS)
            while k.startswith(LEADING):
                k = k[len(next(p for p in LEADING if k.startswith(p))):]
        for op, p in self.ops:
            if op == 'strip' and k.startswith(p):
                k = k[len(p):]
            elif op == 'add':
                k = p + k
        return k

    def prefix(self, p):
        """A _metadata key (module prefix without its trailing dot, '' = root) as the
        key rules see it: 'conv' -> 'conv.' -> rules -> strip the trailing dot."""
        form = self.key(p + '.' if p else '')
        return form[:-1] if form.endswith('.') else form

    @property
    def adds_prefix(self):
        return any(op == 'add' for op, _ in self.ops)


# ----------------------------------------------------------------------------- comparing

def is_state_dict(x):
    """Same definition as docs/architecture.md ("The pipeline", what a state dict is): an
    OrderedDict with _metadata, or a non-empty dict of str -> tensor."""
    if not isinstance(x, dict):
        return False
    if isinstance(x, collections.OrderedDict) and hasattr(x, '_metadata'):
        return True
    return bool(x) and all(isinstance(k, str) for k in x) and all(isinstance(v, torch.Tensor) for v in x.values())


def storage_bytes(t):
    u = t.storage().untyped()
    if u.nbytes() == 0:
        return b''
    flat = torch.empty(0, dtype=torch.uint8).set_(torch.storage.TypedStorage(wrap_storage=u, dtype=torch.uint8))
    return flat.numpy().tobytes()


def element_bytes(t):
    """The tensor's elements in logical order, as raw bytes (bitwise: NaN payloads, -0.0)."""
    if t.numel() == 0:
        return b''
    return t.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()


def storage_id(t):
    u = t.storage().untyped()
    return (u.data_ptr(), u.nbytes()) if u.nbytes() else None   # empty storages share no data


def fmt_path(path):
    return ''.join(f'[{k!r}]' for k in path) or '(top level)'


class Comparison:
    """Walks input and output together. Records every tensor pair and state dict pair."""

    def __init__(self, rules):
        self.rules = rules
        self.tensors = []          # (in_path, in_tensor, out_path, out_tensor)
        self.state_dicts = []      # (in_path, in_sd, out_path, out_sd)

    def compare(self, a, b, ipath=(), opath=()):
        where = fmt_path(opath)
        if is_state_dict(a):
            self.compare_state_dict(a, b, ipath, opath)
        elif isinstance(a, torch.Tensor):
            self.compare_tensor(a, b, ipath, opath)
        elif isinstance(a, dict):
            check(type(b) is type(a), f'{where}: type {type(b).__name__}, input has {type(a).__name__}')
            check(list(b.keys()) == list(a.keys()),
                  f'{where}: keys {list(b.keys())!r} differ from the input\'s {list(a.keys())!r}')
            for k in a:
                self.compare(a[k], b[k], ipath + (k,), opath + (k,))
        elif isinstance(a, (list, tuple)):
            check(type(b) is type(a), f'{where}: type {type(b).__name__}, input has {type(a).__name__}')
            check(len(b) == len(a), f'{where}: length {len(b)}, input has {len(a)}')
            for i, (x, y) in enumerate(zip(a, b)):
                self.compare(x, y, ipath + (i,), opath + (i,))
        elif isinstance(a, argparse.Namespace):
            check(type(b) is type(a), f'{where}: type {type(b).__name__}, input has argparse.Namespace')
            self.compare(vars(a), vars(b), ipath, opath)
        elif isinstance(a, np.ndarray):
            check(type(b) is np.ndarray, f'{where}: type {type(b).__name__}, input has numpy.ndarray')
            check(b.dtype == a.dtype and b.shape == a.shape and b.tobytes() == a.tobytes(),
                  f'{where}: numpy array {b!r} differs from the input\'s {a!r}')
        elif isinstance(a, np.generic):
            check(type(b) is type(a) and b.tobytes() == a.tobytes(),
                  f'{where}: {type(b).__name__} {b!r} differs from the input\'s {type(a).__name__} {a!r}')
        elif isinstance(a, float):
            check(type(b) is float and struct.pack('<d', a) == struct.pack('<d', b),
                  f'{where}: {b!r} differs from the input\'s float {a!r}')
        else:
            check(type(b) is type(a) and b == a,
                  f'{where}: {type(b).__name__} {b!r} differs from the input\'s {type(a).__name__} {a!r}')

    def compare_state_dict(self, a, b, ipath, opath):
        where = fmt_path(opath)
        check(isinstance(b, dict) and type(b) is type(a),
              f'{where}: state dict became {type(b).__name__} (input: {type(a).__name__})')
        expected = [self.rules.key(k) for k in a]
        got = list(b.keys())
        if got != expected:
            missing = [k for k in expected if k not in b][:5]
            extra = [k for k in got if k not in expected][:5]
            raise CaseFailure(f'{where}: state dict keys differ from the rewritten input keys '
                              f'(missing {missing}, unexpected {extra}, or order differs; '
                              f'expected {expected[:6]}..., got {got[:6]}...)')
        for k in a:
            nk = self.rules.key(k)
            self.compare_tensor(a[k], b[nk], ipath + (k,), opath + (nk,))
        self.compare_metadata(a, b, where)
        self.state_dicts.append((ipath, a, opath, b))

    def compare_metadata(self, a, b, where):
        am = getattr(a, '_metadata', None)
        if am is None:
            return      # nothing to keep (a plain OrderedDict of tensors)
        bm = getattr(b, '_metadata', None)
        check(bm is not None, f'{where}: _metadata is missing from the output state dict')
        mapped = collections.OrderedDict()
        for p, v in am.items():
            mapped.setdefault(self.rules.prefix(p), []).append(v)
        missing = [q for q in mapped if q not in bm]
        extra = [q for q in bm if q not in mapped and not (q == '' and self.rules.adds_prefix)]
        check(not missing and not extra,
              f'{where}: _metadata keys are not the rewritten prefixes: missing {missing[:6]}, '
              f'unexpected {extra[:6]} (input prefixes {list(am)[:6]}...)')
        for q, candidates in mapped.items():
            # Several input prefixes can map to one ('' and 'module' in a DataParallel file):
            # the innermost module's entry (the last in state_dict order) is the plain model's.
            check(bm[q] == candidates[-1],
                  f'{where}: _metadata[{q!r}] = {bm[q]!r}, expected {candidates[-1]!r} '
                  f'(the innermost of {candidates!r})')

    def compare_tensor(self, a, b, ipath, opath):
        where = fmt_path(opath)
        check(isinstance(b, torch.Tensor), f'{where}: {type(b).__name__}, input has a tensor')
        check(type(b) is type(a), f'{where}: {type(b).__name__}, input has {type(a).__name__}')
        check(b.device.type == 'cpu', f'{where}: loaded on {b.device}, expected cpu')
        for attr in ('dtype', 'shape', 'requires_grad'):
            check(getattr(b, attr) == getattr(a, attr),
                  f'{where}: {attr} {getattr(b, attr)} differs from the input\'s {getattr(a, attr)}')
        check(b.stride() == a.stride(), f'{where}: stride {b.stride()} differs from the input\'s {a.stride()}')
        check(b.storage_offset() == a.storage_offset(),
              f'{where}: storage_offset {b.storage_offset()} differs from the input\'s {a.storage_offset()}')
        check(element_bytes(b) == element_bytes(a), f'{where}: values differ bitwise from the input\'s')
        check(b.storage().untyped().nbytes() == a.storage().untyped().nbytes()
              and storage_bytes(b) == storage_bytes(a),
              f'{where}: underlying storage ({b.storage().untyped().nbytes()} bytes) differs from the '
              f'input\'s ({a.storage().untyped().nbytes()} bytes)')
        self.tensors.append((ipath, a, opath, b))

    def check_sharing(self):
        """Tensors that share a storage in the input share one in the output, and tensors
        that do not, do not."""
        groups = collections.defaultdict(list)
        for ipath, a, opath, b in self.tensors:
            sid = storage_id(a)
            if sid is not None:
                groups[sid].append((opath, b))
        seen = {}
        for sid, members in groups.items():
            out_ids = {storage_id(b) for _, b in members}
            check(len(out_ids) == 1,
                  f'tensors that share one storage in the input do not share in the output: '
                  f'{[fmt_path(p) for p, _ in members]}')
            oid = out_ids.pop()
            if oid is not None:
                check(oid not in seen, f'{fmt_path(members[0][0])} and {seen.get(oid)} share a storage '
                                       f'in the output but not in the input')
                seen[oid] = fmt_path(members[0][0])


def find_model_state_dict(obj, key=None):
    """Where --extract looks: KEY, else state_dict, model, model_state_dict, net, module,
    else the top level."""
    if key is not None:
        return obj[key]
    if isinstance(obj, dict):
        for k in ('state_dict', 'model', 'model_state_dict', 'net', 'module'):
            if k in obj and isinstance(obj[k], dict):
                return obj[k]
    return obj
