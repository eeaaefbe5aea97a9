"""ckpt-convert e2e cases for `check`, the CI gate before deployment.

Registered in the registry of cases.py (cases.py imports this module). The inputs are made
at test time by torch (state dicts with NaN/Inf, half models, TorchScript modules saved with
torch.jit.save), and PyTorch is the judge: what `check` calls missing, unexpected or of
another size must be what `load_state_dict(strict=True)` finds, and its NaN/Inf counts what
torch.isnan/isinf count.

The CLI contract judged here:
- `check FILE [--device DEV] [--expect-keys FILE | --expect-model M.pt] [--key KEY]
  [--no-wrapper-prefixes] [--finite] [--dtype D] [--json]`
- exit 0 and one `FILE: check passed ...` line on stderr; exit 3 with one line
  `ckpt-convert: error: FILE: <problem>` per problem: `missing key 'K'`, `unexpected key 'K'`,
  `size mismatch for 'K': [..] in the file, [..] expected`, `dtype mismatch for 'K': ...`,
  `wrapper prefix left in 'K': module.`, `'K' holds N NaN and M Inf among T values ...`,
  `record data/N: ... CRC-32 ...`; exit 2 for a bad expected-keys file (FILE:LINE);
  exit 4 for a device this machine lacks.
- `--json`: one object, schema `ckpt-convert.check/1`, `problems` [{kind, key, message}].
- On the CPU LibTorch is loaded only for --expect-model (TorchScript).
"""
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

sys.dont_write_bytecode = True     # keep __pycache__ out of the source tree
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


from judge import host_cases  # noqa: E402

cases = host_cases()
ERROR_PREFIX = 'ckpt-convert: error: '


def case(fn):
    if fn.__name__ in cases.CASES:
        raise SystemExit(f'cases_check.py: case {fn.__name__} is already registered')
    return cases.case(fn)


def J():
    return cases.J()


def check(ctx, *args, env=None):
    """Run `ckpt-convert check ARGS` (with extra environment ENV)."""
    j = J()
    if env is None:
        r = ctx.run('check', *args)
    else:
        cmd = [str(ctx.binary), 'check'] + [str(a) for a in args]
        p = subprocess.run(cmd, cwd=ctx.work, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=ctx.timeout, env={**os.environ, **env})
        ctx.last = r = j.Result(cmd, p.returncode, j._text(p.stdout), j._text(p.stderr))
    j.check_clean_exit(r)
    return r


def problems(r, path):
    """The problems of a failed check: its stderr lines without the prefix and the file."""
    j = J()
    lines = r.stderr.splitlines()
    head = f'{ERROR_PREFIX}{path}: '
    bad = [line for line in lines if not line.startswith(head)]
    j.check(not bad, f'stderr lines not of the form {head!r}...: {bad[:3]}')
    return [line[len(head):] for line in lines]


def passed(r, path):
    j = J()
    j.check(r.rc == 0, f'exit code {r.rc}, expected 0 (passed)')
    lines = r.stderr.splitlines()
    j.check(len(lines) == 1 and lines[0].startswith(f'{path}: check passed'),
            f'stderr is not one "{path}: check passed" line')


def failed(r, path):
    j = J()
    j.check(r.rc == 3, f'exit code {r.rc}, expected 3 (check failed)')
    return problems(r, path)


def clean_tiny_cnn(ctx, name='model.pth', model=None):
    """A plain TinyCNN state dict converted from the DataParallel fixture."""
    j = J()
    out = ctx.out_dir / name
    r = ctx.run(ctx.fixture('dp_tiny_cnn.pth'), out)
    j.check(r.rc == 0, f'conversion failed: {r.stderr}')
    return out


def keys_file(ctx, sd, name='keys.txt'):
    """The expected-keys file as Python prints a state dict."""
    path = ctx.work / name
    with open(path, 'w') as f:
        for k, v in sd.items():
            print(k, list(v.shape), v.dtype, file=f)
    return path


def torch_strict_problems(model, sd):
    """What load_state_dict(strict=True) finds: missing, unexpected, size-mismatched keys."""
    mine = model.state_dict()
    result = model.load_state_dict({k: v for k, v in sd.items() if k not in mine or
                                    mine[k].shape == v.shape}, strict=False)
    sizes = {k for k, v in sd.items() if k in mine and mine[k].shape != v.shape}
    return set(result.missing_keys) - sizes, set(result.unexpected_keys), sizes


def script_model(ctx, model, name):
    import torch
    path = ctx.work / name
    torch.jit.save(torch.jit.script(model), str(path))
    return path


# ----------------------------------------------------------------------------- cases

@case
def check_passes_clean_state_dict(ctx):
    import torch
    j = J()
    out = clean_tiny_cnn(ctx)
    keys = keys_file(ctx, torch.load(str(out)))
    r = check(ctx, out, '--expect-keys', keys, '--no-wrapper-prefixes', '--finite', '--dtype', 'float32')
    passed(r, out)
    for words in ('keys and shapes as in', 'no wrapper prefixes', 'no NaN or Inf', 'float32'):
        j.check(words in r.stderr, f'the passed line does not mention {words!r}')
    r = check(ctx, out, '--expect-keys', keys, '--finite', '--json')
    j.check(r.rc == 0, f'--json: exit code {r.rc}')
    doc = json.loads(r.stdout)
    j.check(doc['schema'] == 'ckpt-convert.check/1' and doc['status'] == 'ok' and doc['problems'] == []
            and doc['keys'] == 9 and doc['tensors'] == 9 and doc['expected_keys'] == 9, f'--json: {doc}')


@case
def check_missing_unexpected_and_size_mismatch_listed(ctx):
    """Against a model with another head, the lines name exactly what torch's strict load
    names; --json lists the same problems."""
    import torch
    from models import TinyCNN
    j = J()
    out = clean_tiny_cnn(ctx)
    sd = torch.load(str(out))
    model = TinyCNN(num_classes=12)
    model.extra = torch.nn.Linear(2, 2)
    expected = {k: v for k, v in model.state_dict().items() if k != 'bn.running_var'}
    keys = keys_file(ctx, expected)
    model_missing, model_unexpected, model_sizes = torch_strict_problems(model, sd)
    model_missing.discard('bn.running_var')
    model_unexpected.add('bn.running_var')
    r = check(ctx, out, '--expect-keys', keys)
    got = failed(r, out)
    want = ([f"missing key '{k}' (expected shape {list(expected[k].shape)})" for k in expected
             if k in model_missing] +
            [f"unexpected key '{k}'" for k in sd if k in model_unexpected] +
            [f"size mismatch for '{k}': {list(sd[k].shape)} in the file, {list(expected[k].shape)} expected"
             for k in expected if k in model_sizes])
    j.check(len(want) == 5, f'judge: expected 2 missing, 1 unexpected, 2 size mismatches, got {want}')
    j.check(got == want, f'problems {got}, expected {want}')
    r = check(ctx, out, '--expect-keys', keys, '--json')
    doc = json.loads(r.stdout)
    j.check(doc['status'] == 'failed' and doc['exit_code'] == 3, f'--json status {doc["status"]}')
    j.check([p['message'] for p in doc['problems']] == want, '--json problems differ from stderr')
    j.check([p['kind'] for p in doc['problems']] == ['missing'] * 2 + ['unexpected'] + ['shape'] * 2,
            f'--json kinds {[p["kind"] for p in doc["problems"]]}')


@case
def check_module_prefix_left_fails(ctx):
    j = J()
    inp = ctx.fixture('dp_tiny_cnn.pth')
    import torch
    sd = torch.load(str(inp))
    r = check(ctx, inp, '--no-wrapper-prefixes')
    got = failed(r, inp)
    j.check(got == [f"wrapper prefix left in '{k}': module." for k in sd], f'problems {got}')
    passed(check(ctx, inp), inp)
    fsdp = ctx.fixture('fsdp_style.pth')
    got = failed(check(ctx, fsdp, '--no-wrapper-prefixes'), fsdp)
    j.check(got and all('_fsdp_wrapped_module' in p for p in got), f'FSDP components not flagged: {got[:2]}')


@case
def check_nan_and_inf_found(ctx):
    import torch
    j = J()
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    base[1, 0] = float('nan')              # between the view's elements: not in it
    base[2, 3] = float('nan')              # past the view's end
    sd = {
        'w32': torch.tensor([1.0, float('nan'), float('inf'), -float('inf')]),
        'w16': torch.tensor([[1.0, float('inf')], [2.0, 3.0]], dtype=torch.float16),
        'bf16': torch.tensor([float('nan')] * 3, dtype=torch.bfloat16),
        'c64': torch.tensor([1 + 1j, complex(float('inf'), 0)], dtype=torch.complex64),
        'f64': torch.tensor([1e308, -1e308], dtype=torch.float64),
        'view': base[:2, 1:],              # strided, over the storage: its NaN is not in the view
        'ints': torch.tensor([2139095040], dtype=torch.int32),   # the bits of +inf, as an int
    }
    path = ctx.work / 'nan.pth'
    torch.save(sd, str(path))
    r = check(ctx, path, '--finite')
    got = failed(r, path)
    want = []
    for k, v in sd.items():
        if not (v.is_floating_point() or v.is_complex()):
            continue
        nan = int(torch.isnan(v).sum())
        inf = int(torch.isinf(v).sum()) if not v.is_complex() else \
            int((torch.isinf(v) & ~torch.isnan(v)).sum())
        if nan + inf:
            first = [int(i) for i in (torch.isnan(v) | torch.isinf(v)).nonzero()[0]]
            counts = ' and '.join(x for x in (f'{nan} NaN' if nan else '', f'{inf} Inf' if inf else '') if x)
            want.append(f"'{k}' holds {counts} among {v.numel()} values (first at {first})")
    j.check(len(want) == 4, f'judge: {want}')
    j.check(got == want, f'problems {got}, expected {want}')
    passed(check(ctx, path), path)


@case
def check_dtype_mismatch(ctx):
    """--dtype fails floating-point tensors of another dtype; the dtypes of an expected-keys
    file do not, as load_state_dict(strict=True) casts (before: one dtype line each)."""
    import torch
    from models import TinyCNN
    j = J()
    half = TinyCNN().half().state_dict()
    path = ctx.work / 'half.pth'
    torch.save(half, str(path))
    got = failed(check(ctx, path, '--dtype', 'float32'), path)
    floats = [k for k, v in half.items() if v.is_floating_point()]
    j.check(got == [f"dtype mismatch for '{k}': float16, expected float32 (--dtype)" for k in floats],
            f'problems {got}')
    j.check('bn.num_batches_tracked' not in floats, 'judge: the int64 buffer is exempt')
    passed(check(ctx, path, '--dtype', 'half'), path)
    keys = keys_file(ctx, TinyCNN().state_dict())        # float32 dtypes written in the file
    TinyCNN().load_state_dict(half, strict=True)          # torch casts: no error
    passed(check(ctx, path, '--expect-keys', keys), path)
    got = failed(check(ctx, path, '--expect-keys', keys, '--dtype', 'float32'), path)
    j.check(got == [f"dtype mismatch for '{k}': float16, expected float32 (--dtype)" for k in floats],
            f'--expect-keys with --dtype: {got}')
    r = check(ctx, path, '--dtype', 'flaot16')
    j.check(r.rc == 2, f'unknown dtype: exit code {r.rc}, expected 2')
    j.check_one_error_line(r, must_contain=("did you mean 'float16'",))


@case
def check_expect_model_torchscript(ctx):
    """--expect-model reads the parameters and buffers of a module saved with torch.jit.save."""
    from models import TinyCNN, TinyLM
    j = J()
    out = clean_tiny_cnn(ctx)
    passed(check(ctx, out, '--expect-model', script_model(ctx, TinyCNN(), 'cnn.pt')), out)
    got = failed(check(ctx, out, '--expect-model', script_model(ctx, TinyCNN(num_classes=12), 'cnn12.pt')), out)
    j.check(got == ["size mismatch for 'fc.weight': [10, 8] in the file, [12, 8] expected",
                    "size mismatch for 'fc.bias': [10] in the file, [12] expected"], f'problems {got}')
    dp = ctx.fixture('dp_tiny_cnn.pth')
    got = failed(check(ctx, dp, '--expect-model', ctx.work / 'cnn.pt'), dp)
    j.check(len(got) == 18 and sum(p.startswith("unexpected key 'module.") for p in got) == 9,
            f'DataParallel keys against the plain model: {got[:3]}...')
    # tied weights: the state dict has both keys, and so does the TorchScript module
    lm = ctx.out_dir / 'lm.pth'
    j.check(ctx.run(ctx.fixture('tied_weights.pth'), lm).rc == 0, 'tied_weights conversion failed')
    passed(check(ctx, lm, '--expect-model', script_model(ctx, TinyLM(), 'lm.pt')), lm)
    r = check(ctx, out, '--expect-model', ctx.fixture('dp_tiny_cnn.pth'))
    j.check(r.rc == 1, f'a state dict given as --expect-model: exit code {r.rc}, expected 1')
    j.check_one_error_line(r, must_contain=('TorchScript',))


@case
def check_cpu_never_loads_libtorch(ctx):
    """With no plugin to load, every CPU check still runs; only --expect-model needs it."""
    import torch
    j = J()
    out = clean_tiny_cnn(ctx)
    keys = keys_file(ctx, torch.load(str(out)))
    env = {'CKPT_TORCH_PLUGIN': str(ctx.work / 'no-such-plugin.so')}
    passed(check(ctx, out, '--expect-keys', keys, '--finite', '--no-wrapper-prefixes', '--dtype', 'float32',
                 env=env), out)
    from models import TinyCNN
    r = check(ctx, out, '--expect-model', script_model(ctx, TinyCNN(), 'cnn.pt'), env=env)
    j.check(r.rc == 1, f'--expect-model without the plugin: exit code {r.rc}, expected 1')
    j.check_one_error_line(r, must_contain=('no-such-plugin.so',))


@case
def check_corrupt_record_fails(ctx):
    """A flipped byte inside a tensor record (torch 1.13's torch.load reads it without
    complaint): check finds it by the record's CRC-32."""
    j = J()
    out = clean_tiny_cnn(ctx)
    with zipfile.ZipFile(out) as z:
        info = next(i for i in z.infolist() if re.search(r'/data/\d+$', i.filename) and i.file_size >= 8)
        name = info.filename
    data = bytearray(out.read_bytes())
    # the stored record's bytes follow its local header: 30 bytes, the name, the extra field
    header = info.header_offset
    start = header + 30 + int.from_bytes(data[header + 26:header + 28], 'little') + \
        int.from_bytes(data[header + 28:header + 30], 'little')
    data[start + 3] ^= 0x40
    bad = ctx.work / 'flipped.pth'
    bad.write_bytes(bytes(data))
    got = failed(check(ctx, bad), bad)
    record = name.split('/', 1)[1]
    j.check(got == [f'record {record}: its bytes do not match the CRC-32 in the archive (the file is damaged)'],
            f'problems {got}')


@case
def check_bad_expected_keys_file_exit2(ctx):
    j = J()
    out = clean_tiny_cnn(ctx)
    keys = ctx.work / 'keys.txt'
    keys.write_text('conv.weight [8, 3, 3, 3] torch.float32\nfc.bias [1O]\nfc.weight [10, 8] float33\n')
    r = check(ctx, out, '--expect-keys', keys)
    j.check(r.rc == 2, f'exit code {r.rc}, expected 2')
    lines = r.stderr.splitlines()
    j.check(lines == [f"{ERROR_PREFIX}{keys}:2: 'fc.bias': '1O' is not a dimension",
                      f"{ERROR_PREFIX}{keys}:3: 'fc.weight': unknown dtype 'float33', did you mean 'float32'?"],
            f'stderr {lines}')


@case
def check_device_cuda_unavailable_exit4(ctx):
    import torch
    j = J()
    if torch.cuda.is_available():
        raise j.CaseSkipped('this machine has CUDA: tools/gpu-check.sh covers --device cuda')
    out = clean_tiny_cnn(ctx)
    r = check(ctx, out, '--device', 'cuda:0')
    j.check(r.rc == 4, f'exit code {r.rc}, expected 4 (device unavailable)')
    j.check_one_error_line(r, must_contain=('cuda:0',))
