"""ckpt-convert e2e cases for `check`, the CI gate before deployment.

Registered in the registry of cases.py (cases.py imports this module). The inputs are made
at test time by torch (state dicts with NaN/Inf, half models, TorchScript modules saved with
torch.jit.save), and PyTorch is the judge: what `check` calls missing, unexpected or of
another size must be what `load_state_dict(strict=True)` finds, and its NaN/Inf counts what
torch.isnan/isinf count.

The CLI contract judged here:
- `check FILE... [--device DEV] [--expect-keys FILE | --expect-model M.pt] [--key KEY]
  [--no-wrapper-prefixes] [--finite] [--dtype D] [--json] [-q]`
- each FILE in turn: one line `ckpt-convert: error: FILE: <problem>` per problem
  (`missing key 'K'`, `unexpected key 'K'`, `size mismatch for 'K': [..] in the file, [..]
  expected`, `dtype mismatch for 'K': ... (--dtype)`, `wrapper prefix left in 'K': module.`,
  `every key starts with 'module.' (...): convert first: ckpt-convert FILE OUT`,
  `'K' holds N NaN and M Inf among T values ...`, `record data/N: ... CRC-32 ...`), or one
  error line for a file that cannot be read; then `FILE: check passed ...` or
  `FILE: check failed ...; N problem(s)`.
- the last stderr line (unless -q): `check: N file(s), P passed, F failed[, U unreadable]
  [: COUNT KIND, ...]`, kinds in the order missing, unexpected, shape, dtype, wrapper,
  non_finite, global, corrupt, device, location.
- exit 0 all passed; 3 any failed; 1 only unreadable failures; 2 usage or a bad
  expected-keys file (FILE:LINE), no summary; 4 a device this machine lacks, no summary.
- dtypes of an expected-keys file are not compared (load_state_dict casts): only --dtype.
- `--json`: one object for every outcome, schema `ckpt-convert.check/2`, valid against
  docs/check.schema.json: `summary`, `files` [{file, status, problems [{kind, key, message}]}].
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
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))


from judge import host_cases  # noqa: E402

cases = host_cases()
ERROR_PREFIX = 'ckpt-convert: error: '
SCHEMA = ROOT / 'docs' / 'check.schema.json'
KINDS = ('missing', 'unexpected', 'shape', 'dtype', 'wrapper', 'non_finite', 'global', 'corrupt',
         'device', 'location')
SUMMARY = re.compile(r'check: (\d+) files?, (\d+) passed, (\d+) failed(?:, (\d+) unreadable)?'
                     r'(?:: (\d+ [a-z_]+(?:, \d+ [a-z_]+)*))?')


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


def problem_lines(lines, path):
    """Error lines of one file without the prefix and the file name."""
    j = J()
    head = f'{ERROR_PREFIX}{path}: '
    bad = [line for line in lines if not line.startswith(head)]
    j.check(not bad, f'stderr lines not of the form {head!r}...: {bad[:3]}')
    return [line[len(head):] for line in lines]


def summary_counts(line):
    """(files, passed, failed, unreadable, {kind: count}) of a summary line."""
    j = J()
    m = SUMMARY.fullmatch(line)
    j.check(m, f'last stderr line is not a summary: {line!r}')
    kinds = {}
    for item in (m.group(5).split(', ') if m.group(5) else []):
        n, kind = item.split(' ')
        kinds[kind] = int(n)
    return int(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(4) or 0), kinds


def passed(r, path):
    j = J()
    j.check(r.rc == 0, f'exit code {r.rc}, expected 0 (passed)')
    lines = r.stderr.splitlines()
    j.check(len(lines) == 2 and lines[0].startswith(f'{path}: check passed'),
            f'stderr is not a "{path}: check passed" line and the summary: {lines[:3]}')
    j.check(lines[1] == 'check: 1 file, 1 passed, 0 failed', f'summary {lines[1]!r}')


def failed(r, path):
    """The problems of one failed file: its error lines, then its failed line, then the
    summary, whose counts add up to the problems."""
    j = J()
    j.check(r.rc == 3, f'exit code {r.rc}, expected 3 (check failed)')
    lines = r.stderr.splitlines()
    j.check(len(lines) >= 3, f'stderr has {len(lines)} lines, expected problems, the failed line, the summary')
    got = problem_lines(lines[:-2], path)
    j.check(lines[-2].startswith(f'{path}: check failed') and
            lines[-2].endswith(f'; {len(got)} problem(s)'), f'failed line {lines[-2]!r}')
    files, ok, bad, unreadable, kinds = summary_counts(lines[-1])
    j.check((files, ok, bad, unreadable) == (1, 0, 1, 0) and sum(kinds.values()) == len(got),
            f'summary {lines[-1]!r} for {len(got)} problems')
    return got


def json_doc(r):
    """stdout as one JSON object valid against docs/check.schema.json, exit_code the exit."""
    j = J()
    try:
        import jsonschema
    except ImportError:
        raise j.CaseFailure('python module jsonschema missing: apt-get install python3-jsonschema') from None
    try:
        doc = json.loads(r.stdout)
    except json.JSONDecodeError as e:
        raise j.CaseFailure(f'stdout is not one JSON object: {e}: {r.stdout[:300]!r}') from None
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    j.check(not errors, f'--json does not match {SCHEMA.name}: ' + '; '.join(
        f"at {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:200]}" for e in errors[:5]))
    j.check(doc['exit_code'] == r.rc, f"exit_code {doc['exit_code']} but exit {r.rc}")
    return doc


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
    doc = json_doc(r)
    f = doc['files'][0]
    j.check(doc['schema'] == 'ckpt-convert.check/2' and doc['status'] == 'ok' and doc['error'] is None
            and len(doc['files']) == 1 and f['status'] == 'passed' and f['problems'] == []
            and f['keys'] == 9 and f['tensors'] == 9 and f['expected_keys'] == 9, f'--json: {doc}')
    j.check(doc['summary'] == {'files': 1, 'passed': 1, 'failed': 0, 'unreadable': 0,
                               'problems': {k: 0 for k in KINDS}}, f"--json summary {doc['summary']}")


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
    j.check(r.stderr.splitlines()[-1] == 'check: 1 file, 0 passed, 1 failed: 2 missing, 1 unexpected, 2 shape',
            f'summary {r.stderr.splitlines()[-1]!r}')
    r = check(ctx, out, '--expect-keys', keys, '--json')
    doc = json_doc(r)
    problems = doc['files'][0]['problems']
    j.check(doc['status'] == 'failed' and doc['exit_code'] == 3, f'--json status {doc["status"]}')
    j.check(doc['error'] == 'check: 1 file, 0 passed, 1 failed: 2 missing, 1 unexpected, 2 shape',
            f"--json error {doc['error']!r}")
    j.check([p['message'] for p in problems] == want, '--json problems differ from stderr')
    j.check([p['kind'] for p in problems] == ['missing'] * 2 + ['unexpected'] + ['shape'] * 2,
            f'--json kinds {[p["kind"] for p in problems]}')


@case
def check_module_prefix_left_fails(ctx):
    """--no-wrapper-prefixes: a key that still carries a wrapper gets a line each, when only
    some do (FSDP components anywhere in the key too)."""
    import torch
    j = J()
    sd = torch.load(str(clean_tiny_cnn(ctx)))
    mixed = {('module.' + k if k.startswith('fc.') else k): v for k, v in sd.items()}
    mixed['bn._fsdp_wrapped_module.extra'] = torch.zeros(2)
    path = ctx.work / 'mixed.pth'
    torch.save(mixed, str(path))
    got = failed(check(ctx, path, '--no-wrapper-prefixes'), path)
    j.check(got == ["wrapper prefix left in 'module.fc.weight': module.",
                    "wrapper prefix left in 'module.fc.bias': module.",
                    "wrapper prefix left in 'bn._fsdp_wrapped_module.extra': _fsdp_wrapped_module"],
            f'problems {got}')
    passed(check(ctx, path), path)


@case
def check_wrapper_hint_one_line_and_it_works(ctx):
    """Every key starts with module.: one problem line saying to convert first (not 9 wrapper
    lines, not 9 missing + 9 unexpected), kind wrapper once in --json; running the command
    it gives yields a file that passes and loads strict (before: 9 or 18 lines)."""
    import torch
    from models import TinyCNN
    j = J()
    inp = ctx.fixture('dp_tiny_cnn.pth')
    hint = f"every key starts with 'module.' (a DataParallel/DDP wrapper): convert first: ckpt-convert {inp} OUT"
    j.check(failed(check(ctx, inp, '--no-wrapper-prefixes'), inp) == [hint], f'stderr {ctx.last.stderr}')
    j.check(ctx.last.stderr.splitlines()[-1] == 'check: 1 file, 0 passed, 1 failed: 1 wrapper',
            f'summary {ctx.last.stderr.splitlines()[-1]!r}')
    keys = keys_file(ctx, TinyCNN().state_dict())
    j.check(failed(check(ctx, inp, '--expect-keys', keys), inp) == [hint], f'stderr {ctx.last.stderr}')
    doc = json_doc(check(ctx, inp, '--expect-keys', keys, '--no-wrapper-prefixes', '--json'))
    j.check(doc['files'][0]['problems'] == [{'kind': 'wrapper', 'key': None, 'message': hint}],
            f"--json problems {doc['files'][0]['problems']}")
    j.check(doc['summary']['problems']['wrapper'] == 1, f"--json summary {doc['summary']}")
    out = ctx.out_dir / 'OUT'
    r = ctx.run(*hint.split('convert first: ckpt-convert ')[1].replace(' OUT', f' {out}').split(' '))
    j.check(r.rc == 0, f'the hint\'s command failed: {r.stderr}')
    passed(check(ctx, out, '--expect-keys', keys, '--no-wrapper-prefixes'), out)
    TinyCNN().load_state_dict(torch.load(str(out)), strict=True)


@case
def check_wrapper_hint_names_lightning_fabric_command(ctx):
    """_forward_module. (Lightning Fabric) is not in the default preset: the hint adds
    --strip _forward_module., and that command gives a file that passes."""
    j = J()
    inp = ctx.fixture('lightning_fabric.pth')
    got = failed(check(ctx, inp, '--no-wrapper-prefixes'), inp)
    j.check(got == [f"every key starts with '_forward_module.' (a Lightning Fabric wrapper): convert first: "
                    f"ckpt-convert {inp} OUT --strip _forward_module."], f'problems {got}')
    out = ctx.out_dir / 'fabric.pth'
    r = ctx.run(inp, out, '--strip', '_forward_module.')
    j.check(r.rc == 0, f'the hint\'s command failed: {r.stderr}')
    passed(check(ctx, out, '--no-wrapper-prefixes'), out)


@case
def check_wrapped_model_expected_compares_keys(ctx):
    """Expected keys that carry module. too (the model is wrapped before it loads): no hint,
    the keys are compared, as DataParallel(model).load_state_dict(strict=True) does."""
    import torch
    from models import TinyCNN
    j = J()
    inp = ctx.fixture('dp_tiny_cnn.pth')
    wrapped = torch.nn.DataParallel(TinyCNN())
    passed(check(ctx, inp, '--expect-keys', keys_file(ctx, wrapped.state_dict())), inp)
    wrapped.load_state_dict(torch.load(str(inp)), strict=True)
    wrapped12 = torch.nn.DataParallel(TinyCNN(num_classes=12))
    got = failed(check(ctx, inp, '--expect-keys', keys_file(ctx, wrapped12.state_dict(), 'k12.txt')), inp)
    _, _, sizes = torch_strict_problems(wrapped12, torch.load(str(inp)))
    j.check(sizes == {'module.fc.weight', 'module.fc.bias'} and
            got == ["size mismatch for 'module.fc.weight': [10, 8] in the file, [12, 8] expected",
                    "size mismatch for 'module.fc.bias': [10] in the file, [12] expected"],
            f'problems {got}, torch {sizes}')


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
    j.check(got == [f"every key starts with 'module.' (a DataParallel/DDP wrapper): convert first: "
                    f"ckpt-convert {dp} OUT"], f'DataParallel keys against the plain model: {got}')
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


@case
def check_summary_is_the_last_line(ctx):
    """Every run that checks files ends with `check: ...` on stderr, passed or failed; -q
    prints only the error lines (before: no summary, no failed line)."""
    import torch
    j = J()
    out = clean_tiny_cnn(ctx)
    passed(check(ctx, out), out)                 # ... 'check: 1 file, 1 passed, 0 failed'
    sd = torch.load(str(out))
    sd['fc.weight'][0, 0] = float('nan')
    sd['conv.bias'][1] = float('inf')
    nan = ctx.work / 'nan.pth'
    torch.save(sd, str(nan))
    r = check(ctx, nan, '--finite', '--no-wrapper-prefixes')
    j.check(len(failed(r, nan)) == 2, f'stderr {r.stderr}')
    j.check(r.stderr.splitlines()[-1] == 'check: 1 file, 0 passed, 1 failed: 2 non_finite',
            f'summary {r.stderr.splitlines()[-1]!r}')
    r = check(ctx, nan, '--finite', '-q')
    j.check(r.rc == 3 and r.stderr.splitlines() == [
        f"{ERROR_PREFIX}{nan}: 'conv.bias' holds 1 Inf among 8 values (first at [1])",
        f"{ERROR_PREFIX}{nan}: 'fc.weight' holds 1 NaN among 80 values (first at [0, 0])"],
        f'-q: exit {r.rc}, stderr {r.stderr.splitlines()}')
    r = check(ctx, out, '-q')
    j.check(r.rc == 0 and r.stderr == '', f'-q passed: exit {r.rc}, stderr {r.stderr!r}')


@case
def check_unreadable_file_exit1_with_summary(ctx):
    """One file that cannot be read: its error line, the summary, exit 1 as before; --json
    lists it as unreadable."""
    j = J()
    bad = ctx.work / 'not_a_checkpoint.pth'
    bad.write_bytes(b'hello, world\n' * 8)
    r = check(ctx, bad)
    j.check(r.rc == 1, f'exit code {r.rc}, expected 1')
    lines = r.stderr.splitlines()
    j.check(len(lines) == 2 and lines[0].startswith(f'{ERROR_PREFIX}{bad}') and
            lines[1] == 'check: 1 file, 0 passed, 0 failed, 1 unreadable', f'stderr {lines}')
    doc = json_doc(check(ctx, bad, '--json'))
    f = doc['files'][0]
    j.check(doc['status'] == 'error' and f['status'] == 'unreadable' and
            f['error'] == lines[0][len(ERROR_PREFIX):] and f['problems'] == [], f'--json {doc}')
    j.check(doc['summary']['unreadable'] == 1 and doc['error'] == lines[1], f'--json {doc}')


@case
def check_several_files_each_reported(ctx):
    """check A B C: each file's error lines then its passed/failed line, in order, the summary
    last; exit 3 when any fails, even beside an unreadable one; 1 when the only failures are
    unreadable files; 0 when all pass (before: a second FILE was a usage error, exit 2)."""
    import torch
    from models import TinyCNN
    j = J()
    good = clean_tiny_cnn(ctx)
    good2 = clean_tiny_cnn(ctx, 'model2.pth')
    keys = keys_file(ctx, TinyCNN().state_dict())
    sd = torch.load(str(good))
    del sd['fc.bias']
    short = ctx.work / 'short.pth'
    torch.save(sd, str(short))
    bad = ctx.work / 'bad.pth'
    bad.write_bytes(b'PK\x03\x04 truncated')
    dp = ctx.fixture('dp_tiny_cnn.pth')
    r = check(ctx, good, short, bad, dp, good2, '--expect-keys', keys)
    j.check(r.rc == 3, f'exit code {r.rc}, expected 3')
    lines = r.stderr.splitlines()
    j.check(len(lines) == 8, f'{len(lines)} stderr lines, expected 8: {lines}')
    j.check(lines[0].startswith(f'{good}: check passed'), f'line 1 {lines[0]!r}')
    j.check(lines[1] == f"{ERROR_PREFIX}{short}: missing key 'fc.bias' (expected shape [10])", f'line 2 {lines[1]!r}')
    j.check(lines[2].startswith(f'{short}: check failed') and lines[2].endswith('; 1 problem(s)'), f'line 3 {lines[2]!r}')
    j.check(lines[3].startswith(f'{ERROR_PREFIX}{bad}: '), f'line 4 {lines[3]!r}')
    j.check(lines[4] == f"{ERROR_PREFIX}{dp}: every key starts with 'module.' (a DataParallel/DDP wrapper): "
                        f"convert first: ckpt-convert {dp} OUT", f'line 5 {lines[4]!r}')
    j.check(lines[5].startswith(f'{dp}: check failed'), f'line 6 {lines[5]!r}')
    j.check(lines[6].startswith(f'{good2}: check passed'), f'line 7 {lines[6]!r}')
    j.check(lines[-1] == 'check: 5 files, 2 passed, 2 failed, 1 unreadable: 1 missing, 1 wrapper',
            f'summary {lines[-1]!r}')
    # torch agrees: the short file misses fc.bias under strict loading
    missing, unexpected, sizes = torch_strict_problems(TinyCNN(), sd)
    j.check((missing, unexpected, sizes) == ({'fc.bias'}, set(), set()), 'judge: torch disagrees')
    r = check(ctx, good, bad, good2)
    j.check(r.rc == 1 and r.stderr.splitlines()[-1] == 'check: 3 files, 2 passed, 0 failed, 1 unreadable',
            f'unreadable only: exit {r.rc}, stderr {r.stderr.splitlines()}')
    r = check(ctx, good, good2, '--expect-keys', keys)
    j.check(r.rc == 0 and r.stderr.splitlines()[-1] == 'check: 2 files, 2 passed, 0 failed'
            and len(r.stderr.splitlines()) == 3, f'all pass: exit {r.rc}, stderr {r.stderr.splitlines()}')


@case
def check_several_files_one_json_object(ctx):
    """--json with several files prints ONE object (check/2): a files entry each, in order,
    and the summary; usage errors and an unavailable device print the same shape with no
    files; all valid against docs/check.schema.json."""
    import torch
    j = J()
    good = clean_tiny_cnn(ctx)
    bad = ctx.work / 'bad.pth'
    bad.write_bytes(b'not a checkpoint')
    dp = ctx.fixture('dp_tiny_cnn.pth')
    doc = json_doc(check(ctx, good, bad, dp, '--no-wrapper-prefixes', '--json'))
    j.check(doc['exit_code'] == 3 and doc['status'] == 'failed', f"exit_code {doc['exit_code']}")
    j.check([(f['file'], f['status']) for f in doc['files']] ==
            [(str(good), 'passed'), (str(bad), 'unreadable'), (str(dp), 'failed')], f"files {doc['files']}")
    want = {k: 0 for k in KINDS}
    want['wrapper'] = 1
    j.check(doc['summary'] == {'files': 3, 'passed': 1, 'failed': 1, 'unreadable': 1, 'problems': want},
            f"summary {doc['summary']}")
    j.check(doc['error'] == ctx.last.stderr.splitlines()[-1] ==
            'check: 3 files, 1 passed, 1 failed, 1 unreadable: 1 wrapper', f"error {doc['error']!r}")
    for args, code in (([good, '--dtype', 'flaot16', '--json'], 2),
                       ([good, good, '--json', '--bogus'], 2),
                       (['--json'], 2)):
        r = check(ctx, *args)
        doc = json_doc(r)
        j.check(r.rc == code and doc['files'] == [] and doc['summary']['files'] == 0 and doc['error'],
                f'{args}: exit {r.rc}, {doc}')
        j.check(not SUMMARY.fullmatch(r.stderr.splitlines()[-1]), f'{args}: a summary after a usage error')
    if not torch.cuda.is_available():
        r = check(ctx, good, dp, '--device', 'cuda:0', '--json')
        doc = json_doc(r)
        j.check(r.rc == 4 and doc['files'] == [], f'no GPU: exit {r.rc}, {doc}')


@case
def check_wrapper_hint_quotes_the_path(ctx):
    """A path with a space is quoted in the hint's command, so it can be pasted."""
    import shutil
    j = J()
    spaced = ctx.work / 'my model.pth'
    shutil.copy(ctx.fixture('dp_tiny_cnn.pth'), spaced)
    got = failed(check(ctx, spaced, '--no-wrapper-prefixes'), spaced)
    j.check(got == [f"every key starts with 'module.' (a DataParallel/DDP wrapper): convert first: "
                    f"ckpt-convert '{spaced}' OUT"], f'problems {got}')
