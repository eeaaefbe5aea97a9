#!/usr/bin/python3
"""The ckpt-convert e2e cases: one small named function per behaviour.

    /usr/bin/python3 tests/e2e/cases.py --list      # one case name per line
    /usr/bin/python3 tests/e2e/cases.py --groups    # one group of cases per line (read by CMake)
    /usr/bin/python3 tests/e2e/run_case.py NAME --bin ckpt-convert --data tests/data \
        --large-data BUILD/fixtures --work FRESH_DIR

The fixture expectations (FIXTURES) and the expected causes of bad inputs (BAD_CAUSES) are
tables at the top, to be adjusted in one place.

torch 1.13 note (checked on the input fixtures, see weights_only_limits): its weights_only
unpickler has no BINFLOAT opcode and refuses every global that is not torch's. A checkpoint
holding a Python float (optimizer lr, scheduler gamma) or argparse/numpy objects therefore
cannot load with weights_only=True on torch 1.13 *whoever wrote it*: the input fixture fails
the same way. For those, the full output must fail only for reasons the input also has
(scanned over the whole pickle, not just the first error), and the --extract output, a bare
state dict, must load with weights_only=True.
"""
import collections
import os
import sys
from pathlib import Path

sys.dont_write_bytecode = True     # keep __pycache__ out of the source tree
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


class Fixture:
    def __init__(self, model=None, sd_key=None, large=False, weights_only_limits=()):
        self.model = model                 # models.MODELS name of the plain model, or None
        self.sd_key = sd_key               # where the model's state dict is; None: top level
        self.large = large                 # generated with --large into --large-data
        # Reasons (see judge.weights_only_blockers) why torch 1.13 cannot load the FULL
        # file with weights_only=True; the input fixture has the same ones.
        self.weights_only_limits = set(weights_only_limits)


NUMPY_GLOBALS = {'global numpy.core.multiarray.scalar', 'global numpy.core.multiarray._reconstruct',
                 'global numpy.ndarray', 'global numpy.dtype', 'global _codecs.encode'}

FIXTURES = {
    'dp_tiny_cnn.pth': Fixture('tiny_cnn'),
    'named_storages.pth': Fixture('tiny_cnn'),
    # optimizer lr/momentum and scheduler gamma are Python floats: BINFLOAT
    'imagenet_checkpoint.pth': Fixture('tiny_cnn', 'state_dict', weights_only_limits={'opcode BINFLOAT'}),
    'legacy_dp.pth': Fixture('tiny_cnn'),
    'orig_mod_module.pth': Fixture('tiny_cnn'),
    'module_orig_mod.pth': Fixture('tiny_cnn'),
    'fsdp_style.pth': Fixture('plain'),
    'tied_weights.pth': Fixture('tiny_lm'),
    'cuda3_tagged.pth': Fixture('tiny_cnn'),
    'dtypes.pth': Fixture(),
    'views.pth': Fixture(),
    # Namespace(lr=0.1) float, argparse/numpy globals, numpy's bytes via _codecs.encode
    'namespace_numpy.pth': Fixture('tiny_cnn', 'state_dict', weights_only_limits={
        'opcode BINFLOAT', 'global argparse.Namespace'} | NUMPY_GLOBALS),
    'clean_cpu.pth': Fixture('tiny_cnn'),
    'dp_resnet18.pth': Fixture('resnet18', large=True),
    'dp_mobilenet_v3_small.pth': Fixture('mobilenet_v3_small', large=True),
}

# bad input (under tests/data/bad/) -> (accepted exit codes, stderr must contain one of
# these, case-insensitively and at the start of a word: 'tar' matches 'tar-format', not 'start'). Every bad case also checks: one 'ckpt-convert: error: ' line
# naming the input path, no crash text, no file left in the output dir, input unchanged.
BAD_CAUSES = {
    'empty.pth': ((1,), ('empty',)),
    'text.pth': ((1,), ('not a pytorch checkpoint',)),
    'tar.pth': ((1,), ('tar',)),
    'torchscript.pt': ((1,), ('torchscript',)),
    'truncated_10.pth': ((1,), ('truncated',)),
    'truncated_100.pth': ((1,), ('truncated',)),
    'truncated_half.pth': ((1,), ('truncated',)),
    'truncated_cut30.pth': ((1,), ('truncated',)),
    'truncated_cut1.pth': ((1,), ('truncated',)),
    'flipped_pickle.pth': ((1,), ()),           # any clear error: CRC or pickle decoder
    'missing_record.pth': ((1,), ('data/',)),
    'short_storage.pth': ((1,), ('storage',)),
    'os_system.pth': ((1,), ('os.system',)),
    'posix_system.pth': ((1,), ('posix.system',)),
    'colliding.pth': ((1,), ('collide',)),
    # not files: IN and OUT naming one file
    'IN==OUT': ((1, 2), ('same file',)),
    # --device cuda:99 (no machine has it): exit 4, "device unavailable"
    'device': ((4,), ('cuda',)),
}

# The canary each code-execution fixture would `touch` if its pickle were executed.
CANARIES = {
    'os_system.pth': '/tmp/ckpt_convert_canary',
    'posix_system.pth': '/tmp/ckpt_convert_canary_posix',
}

CASES = collections.OrderedDict()


def case(fn):
    CASES[fn.__name__] = fn
    return fn


# ----------------------------------------------------------------------------- judging

def J():
    import judge        # imported lazily: `cases.py --list` does not need torch
    return judge


def convert(ctx, name, *options, out_name=None):
    """Run `ckpt-convert IN OUT OPTIONS` on fixture NAME; exit 0, IN unchanged, OUT the only
    file in the output dir. Returns (input path, output path)."""
    j = J()
    fx = FIXTURES[name]
    inp = ctx.fixture(name, large=fx.large)
    out = ctx.out_dir / (out_name or name)
    before = j.sha256(inp)
    r = ctx.run(inp, out, *options, timeout=900 if fx.large else None)
    j.check_clean_exit(r)
    j.check(r.rc == 0, f'exit code {r.rc}, expected 0')
    j.check(j.ERROR_PREFIX not in r.stderr, 'exit code 0 but stderr has an error line')
    j.check(j.sha256(inp) == before, f'the input {inp} was modified')
    j.check(j.listdir(ctx.out_dir) == [out.name],
            f'output dir holds {j.listdir(ctx.out_dir)}, expected only {out.name}')
    return inp, out


def judge_output(ctx, name, inp, out, rules=None, extract=False, extract_key=None,
                 location='cpu', model_wrapper=None, ref_metadata=True):
    """Everything a converted file must satisfy; returns the Comparison.

    - every storage is tagged LOCATION ('cpu' by default: loads without map_location)
    - torch.load(weights_only=True) succeeds, or (full checkpoints only) fails only for
      reasons torch 1.13 also has with the input
    - the model state dict loads strict into the plain model (MODEL_WRAPPER(model) if given)
    - every tensor equals the input's bitwise, with dtype/shape/stride/offset/storage, under
      the rewritten keys; shared storages stay shared; _metadata keys are rewritten
    - everything else (epoch, optimizer, Namespace, numpy ...) is equal
    """
    import torch
    j = J()
    fx = FIXTURES[name]
    rules = rules or j.Rules()
    map_loc = None if location == 'cpu' else 'cpu'

    try:
        locs = j.storage_locations(out)
    except Exception as e:  # noqa: BLE001
        raise j.CaseFailure(f'the output does not load with torch.load: {type(e).__name__}: '
                            f'{str(e)[:1500]}') from None
    j.check(locs and set(locs) == {location},
            f'storage location tags {sorted(set(locs))}, expected all {location!r}')

    gpu = int(location.split(':')[1]) if location.startswith('cuda:') else None
    if gpu is not None and torch.cuda.device_count() <= gpu:     # as on the CI machines
        try:
            j.load(out)
        except RuntimeError as e:
            j.check('CUDA' in str(e), f'plain torch.load failed, but not for CUDA: {e}')
        else:
            raise j.CaseFailure(f'plain torch.load succeeded on a file tagged {location}')

    in_obj = j.load(inp, map_location='cpu')
    wo_obj = None
    try:
        wo_obj = j.load_weights_only(out, map_location=map_loc)
    except Exception as e:  # noqa: BLE001
        msg = str(e).split('WeightsUnpickler error: ')[-1]
        j.check(not extract, f'--extract output does not load with weights_only=True: {msg}')
        j.check(fx.weights_only_limits,
                f'output does not load with weights_only=True (the input has no such limit): {msg}')
        out_blockers = j.weights_only_blockers(out)
        in_blockers = j.weights_only_blockers(inp)
        j.check(in_blockers == fx.weights_only_limits,
                f'judge table out of date: input weights_only blockers {sorted(in_blockers)}, '
                f'FIXTURES says {sorted(fx.weights_only_limits)}')
        j.check(out_blockers, f'weights_only load fails but no opcode/global explains it: {msg}')
        j.check(out_blockers <= in_blockers,
                f'output has weights_only blockers the input has not: {sorted(out_blockers - in_blockers)}')
        j.check(j.blocker_in_error(msg) in out_blockers,
                f'weights_only load fails for another reason than {sorted(out_blockers)}: {msg}')

    out_obj = wo_obj if wo_obj is not None else j.load(out, map_location=map_loc)
    cmp = j.Comparison(rules)
    if extract:
        in_sd = j.find_model_state_dict(in_obj, extract_key or fx.sd_key)
        j.check(j.is_state_dict(out_obj), f'--extract output is a {type(out_obj).__name__}, not a state dict')
        cmp.compare(in_sd, out_obj)
        out_sd = out_obj
    else:
        cmp.compare(in_obj, out_obj)
        out_sd = out_obj[fx.sd_key] if fx.sd_key else out_obj
    cmp.check_sharing()

    if fx.model:
        from models import build
        plain = build(fx.model)
        target = model_wrapper(plain) if model_wrapper else plain
        try:
            target.load_state_dict(out_sd, strict=True)
        except Exception as e:  # noqa: BLE001
            raise j.CaseFailure(f'load_state_dict(strict=True) into {type(target).__name__} fails: '
                                f'{str(e)[:1500]}') from None
        if ref_metadata:
            want = dict(plain.state_dict()._metadata)
            got = dict(getattr(out_sd, '_metadata', {}) or {})
            diff = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
            j.check(got == want, f'_metadata differs from the plain model\'s at {diff[:6]}: '
                                 f'got {[got.get(k) for k in diff[:6]]}, want {[want.get(k) for k in diff[:6]]}')
    return cmp


def bad(ctx, name, *options, cause=None, same_file=None):
    """ckpt-convert must refuse: exit code and cause from BAD_CAUSES, one error line naming
    the input, no crash, nothing left in the output dir, the input unchanged.
    SAME_FILE: a function of IN giving OUT (IN is then put in the output dir)."""
    import shutil
    j = J()
    codes, keywords = BAD_CAUSES[cause or name]
    if same_file:
        inp = ctx.out_dir / 'dp_tiny_cnn.pth'
        shutil.copyfile(ctx.fixture('dp_tiny_cnn.pth', copy=False), inp)
        out = same_file(inp)
        expect_left = [inp.name]
    else:
        inp = ctx.fixture(name if cause == 'device' else 'bad/' + name)
        out = ctx.out_dir / 'out.pth'
        expect_left = []
    canary = CANARIES.get(name)
    if canary and os.path.lexists(canary):
        os.unlink(canary)
    before = j.sha256(inp)
    r = ctx.run(inp, out, *options)
    j.check_clean_exit(r)
    j.check(r.rc in codes, f'exit code {r.rc}, expected {" or ".join(map(str, codes))}')
    # the device error may name the device rather than the input
    j.check_one_error_line(r, must_contain=[] if cause == 'device' else [inp], keywords=keywords)
    j.check(j.listdir(ctx.out_dir) == expect_left,
            f'output dir holds {j.listdir(ctx.out_dir)}, expected {expect_left or "nothing"}')
    j.check(j.sha256(inp) == before, f'the input {inp} was modified')
    if canary:
        j.check(not os.path.lexists(canary), f'{canary} exists: the pickle\'s os.system call RAN')


# ----------------------------------------------------------------------------- convert

@case
def convert_dp_tiny_cnn_loads_strict(ctx):
    judge_output(ctx, 'dp_tiny_cnn.pth', *convert(ctx, 'dp_tiny_cnn.pth'))


@case
def convert_named_storages_loads_strict(ctx):
    """Storage records named 'w', '007', '99' beside 2..7 (torch.save names them 0, 1, 2...):
    each tensor still gets its own record's bytes; the output numbers them afresh."""
    judge_output(ctx, 'named_storages.pth', *convert(ctx, 'named_storages.pth'))


@case
def convert_imagenet_checkpoint_keeps_structure(ctx):
    """Full checkpoint: epoch, arch, best_acc1, optimizer (momentum buffers, param_groups),
    scheduler survive; 'state_dict' is rewritten. torch 1.13 cannot load it (nor the input)
    with weights_only=True: BINFLOAT (lr, gamma ...)."""
    inp, out = convert(ctx, 'imagenet_checkpoint.pth')
    cmp = judge_output(ctx, 'imagenet_checkpoint.pth', inp, out)
    J().check(any(p[:1] == ('optimizer',) for p, *_ in cmp.tensors), 'no optimizer tensors compared')


@case
def convert_legacy_dp_loads_strict(ctx):
    """Pre-1.6 (non-zip) input; the output is a zip checkpoint."""
    import zipfile
    inp, out = convert(ctx, 'legacy_dp.pth')
    judge_output(ctx, 'legacy_dp.pth', inp, out)
    J().check(zipfile.is_zipfile(out), 'output is not in the zip format')


@case
def convert_orig_mod_module_loads_strict(ctx):
    judge_output(ctx, 'orig_mod_module.pth', *convert(ctx, 'orig_mod_module.pth'))


@case
def convert_module_orig_mod_loads_strict(ctx):
    judge_output(ctx, 'module_orig_mod.pth', *convert(ctx, 'module_orig_mod.pth'))


@case
def convert_fsdp_style_loads_strict(ctx):
    judge_output(ctx, 'fsdp_style.pth', *convert(ctx, 'fsdp_style.pth'))


@case
def convert_tied_weights_keeps_sharing(ctx):
    inp, out = convert(ctx, 'tied_weights.pth')
    judge_output(ctx, 'tied_weights.pth', inp, out)
    sd = J().load_weights_only(out)
    J().check(sd['embed.weight'].storage().data_ptr() == sd['lm_head.weight'].storage().data_ptr(),
              'embed.weight and lm_head.weight no longer share one storage')


@case
def convert_cuda3_tagged_loads_without_map_location(ctx):
    """Input storages are tagged cuda:3; by default the output's are 'cpu'."""
    judge_output(ctx, 'cuda3_tagged.pth', *convert(ctx, 'cuda3_tagged.pth'))


@case
def convert_cuda3_tagged_location_keep_keeps_cuda3(ctx):
    """--location keep: still tagged cuda:3, so plain torch.load fails like the input's;
    with map_location='cpu' it is otherwise correct."""
    inp, out = convert(ctx, 'cuda3_tagged.pth', '--location', 'keep')
    judge_output(ctx, 'cuda3_tagged.pth', inp, out, location='cuda:3')


@case
def convert_dtypes_bitexact(ctx):
    """12 dtypes incl. bfloat16/complex/bool, NaN/inf/-0.0: bitwise equal."""
    inp, out = convert(ctx, 'dtypes.pth')
    cmp = judge_output(ctx, 'dtypes.pth', inp, out)
    J().check(len({str(t.dtype) for *_, t in cmp.tensors}) == 12, 'not all 12 dtypes compared')


@case
def convert_views_keep_sharing_and_layout(ctx):
    """Transposed, offset, stride-2, expanded, 0-dim, empty tensors; views keep sharing."""
    j = J()
    inp, out = convert(ctx, 'views.pth')
    judge_output(ctx, 'views.pth', inp, out)
    sd = j.load_weights_only(out)
    j.check(sd['rows'].storage_offset() == 6 and sd['rows'].storage().data_ptr() == sd['base'].storage().data_ptr(),
            "'rows' lost its offset or its sharing with 'base'")
    j.check(sd['transposed'].stride() == (1, 6), "'transposed' lost its strides")
    j.check(sd['view_a'].storage().data_ptr() == sd['view_b'].storage().data_ptr(),
            "'view_a' and 'view_b' no longer share a storage")
    j.check(sd['expanded'].stride() == (0, 1), "'expanded' lost its 0 stride")
    j.check(sd['scalar'].dim() == 0 and sd['empty'].numel() == 0, "0-dim or empty tensor changed")


@case
def convert_namespace_numpy_keeps_structure(ctx):
    """Namespace, numpy scalars/array, epoch survive. torch 1.13 cannot load it (nor the
    input) with weights_only=True: argparse/numpy globals, BINFLOAT."""
    judge_output(ctx, 'namespace_numpy.pth', *convert(ctx, 'namespace_numpy.pth'))


@case
def convert_clean_cpu_unchanged(ctx):
    """Nothing to rewrite: same keys, same _metadata."""
    judge_output(ctx, 'clean_cpu.pth', *convert(ctx, 'clean_cpu.pth'))


@case
def convert_dp_resnet18_loads_strict(ctx):
    judge_output(ctx, 'dp_resnet18.pth', *convert(ctx, 'dp_resnet18.pth'))


@case
def convert_dp_mobilenet_v3_small_loads_strict(ctx):
    judge_output(ctx, 'dp_mobilenet_v3_small.pth', *convert(ctx, 'dp_mobilenet_v3_small.pth'))


# ----------------------------------------------------------------------------- extract

@case
def extract_imagenet_checkpoint_bare_state_dict(ctx):
    """--extract finds 'state_dict'; the output loads with weights_only=True, strict."""
    inp, out = convert(ctx, 'imagenet_checkpoint.pth', '--extract')
    judge_output(ctx, 'imagenet_checkpoint.pth', inp, out, extract=True)


@case
def extract_namespace_numpy_bare_state_dict(ctx):
    inp, out = convert(ctx, 'namespace_numpy.pth', '--extract')
    judge_output(ctx, 'namespace_numpy.pth', inp, out, extract=True)


@case
def extract_named_key_state_dict(ctx):
    """--extract=state_dict names the entry."""
    inp, out = convert(ctx, 'imagenet_checkpoint.pth', '--extract=state_dict')
    judge_output(ctx, 'imagenet_checkpoint.pth', inp, out, extract=True, extract_key='state_dict')


@case
def extract_top_level_state_dict(ctx):
    """--extract on a file that is a state dict: the top level is the state dict."""
    inp, out = convert(ctx, 'dp_tiny_cnn.pth', '--extract')
    judge_output(ctx, 'dp_tiny_cnn.pth', inp, out, extract=True)


# ----------------------------------------------------------------------------- options

@case
def dry_run_writes_nothing(ctx):
    """--dry-run: exit 0, no OUT, stdout shows every renamed key as a `- old` / `+ new` pair."""
    j = J()
    inp = ctx.fixture('dp_tiny_cnn.pth')
    out = ctx.out_dir / 'out.pth'
    r = ctx.run(inp, out, '--dry-run')
    j.check_clean_exit(r)
    j.check(r.rc == 0, f'exit code {r.rc}, expected 0')
    j.check(j.listdir(ctx.out_dir) == [], f'--dry-run left {j.listdir(ctx.out_dir)} in the output dir')
    rules = j.Rules()
    lines = r.stdout.splitlines()
    for old in j.load(inp):
        new = rules.key(old)
        j.check(new != old, f'the default rules leave {old} unchanged: fixture changed?')
        j.check(f'- {old}' in lines and lines[lines.index(f'- {old}') + 1] == f'+ {new}',
                f'stdout has no "- {old}" line followed by "+ {new}"')


@case
def preset_none_strip_module_like_default(ctx):
    """--preset none --strip module. gives what the default gives on a DataParallel file."""
    j = J()
    inp, out = convert(ctx, 'dp_tiny_cnn.pth', '--preset', 'none', '--strip', 'module.')
    judge_output(ctx, 'dp_tiny_cnn.pth', inp, out, rules=j.Rules('none', [('strip', 'module.')]))


@case
def add_prefix_module_loads_into_dataparallel(ctx):
    """--add-prefix module. on a clean state dict: loads strict into nn.DataParallel(model)."""
    import torch
    j = J()
    inp, out = convert(ctx, 'clean_cpu.pth', '--add-prefix', 'module.')
    judge_output(ctx, 'clean_cpu.pth', inp, out, rules=j.Rules('unwrap', [('add', 'module.')]),
                 model_wrapper=torch.nn.DataParallel, ref_metadata=False)


@case
def existing_out_refused_without_force(ctx):
    j = J()
    inp = ctx.fixture('dp_tiny_cnn.pth')
    out = ctx.out_dir / 'out.pth'
    out.write_bytes(b'precious\n')
    r = ctx.run(inp, out)
    j.check_clean_exit(r)
    j.check(r.rc != 0, 'exit code 0: an existing OUT was accepted without --force')
    j.check_one_error_line(r, must_contain=[out])
    j.check(out.read_bytes() == b'precious\n', 'the existing OUT was modified')
    j.check(j.listdir(ctx.out_dir) == ['out.pth'], f'output dir holds {j.listdir(ctx.out_dir)}')


@case
def existing_out_replaced_with_force(ctx):
    out = ctx.out_dir / 'dp_tiny_cnn.pth'
    out.write_bytes(b'precious\n')
    inp, out = convert(ctx, 'dp_tiny_cnn.pth', '--force')
    judge_output(ctx, 'dp_tiny_cnn.pth', inp, out)


@case
def device_cuda99_unavailable_exit4(ctx):
    """--device cuda:99 exists on no machine: exit 4 (device unavailable), no OUT."""
    bad(ctx, 'dp_tiny_cnn.pth', '--device', 'cuda:99', cause='device')


@case
def usage_errors_exit2(ctx):
    """Missing OUT, unknown option: exit 2, a 'ckpt-convert: ' message, no crash."""
    j = J()
    inp = ctx.fixture('dp_tiny_cnn.pth')
    for args in ([inp], [inp, ctx.out_dir / 'out.pth', '--no-such-option']):
        r = ctx.run(*args)
        j.check_clean_exit(r)
        j.check(r.rc == 2, f'exit code {r.rc}, expected 2 (usage)')
        j.check(any(line.startswith('ckpt-convert: ') for line in r.stderr.splitlines()),
                "stderr has no 'ckpt-convert: ' line")
        j.check(j.listdir(ctx.out_dir) == [], f'output dir holds {j.listdir(ctx.out_dir)}')


# ----------------------------------------------------------------------------- inspect

def inspect_json(ctx, name, bad_input=False):
    """`ckpt-convert inspect FILE --json`: exit 0, stdout one JSON object, FILE unchanged."""
    import json
    j = J()
    inp = ctx.fixture(('bad/' if bad_input else '') + name, large=False)
    before = j.sha256(inp)
    r = ctx.run('inspect', inp, '--json')
    j.check_clean_exit(r)
    j.check(r.rc == 0, f'exit code {r.rc}, expected 0')
    j.check(j.sha256(inp) == before, f'inspect modified {inp}')
    report = json.loads(r.stdout)
    j.check_schema(report, 'inspect.schema.json')
    return report


@case
def inspect_reports_dataparallel_state_dict(ctx):
    """inspect --json: format, counts, dtypes, locations, the module. wrapper, benign globals."""
    j = J()
    report = inspect_json(ctx, 'dp_tiny_cnn.pth')
    j.check(report['format'] == 'zip', f"format {report['format']!r}")
    j.check(report['tensors'] == 9 and report['storages'] == 9, 'expected 9 tensors in 9 storages')
    [sd] = report['state_dicts']
    j.check(sd['path'] == [] and sd['name'] == '(top level)' and sd['tensors'] == 9 and
            sd['has_metadata'],
            f'state dict entry {sd}')
    j.check(sd['elements'] == 347, f"elements {sd['elements']}, expected 347 (TinyCNN)")
    j.check(sd['dtypes'] == {'float32': 8, 'int64': 1}, f"dtypes {sd['dtypes']}")
    j.check(sd['locations'] == {'cpu': 9}, f"locations {sd['locations']}")
    j.check(sd['wrappers'] == {'module.': 9}, f"wrappers {sd['wrappers']}")
    j.check(not any(g['runs_code'] for g in report['globals']), f"globals {report['globals']}")


@case
def inspect_reports_legacy_and_cuda_locations(ctx):
    """inspect tells the legacy format apart and shows cuda:3 locations."""
    j = J()
    legacy = inspect_json(ctx, 'legacy_dp.pth')
    j.check(legacy['format'] == 'legacy', f"format {legacy['format']!r}")
    cuda = inspect_json(ctx, 'cuda3_tagged.pth')
    j.check(cuda['state_dicts'][0]['locations'] == {'cuda:3': 9},
            f"locations {cuda['state_dicts'][0]['locations']}")


@case
def inspect_reports_nested_and_mid_key_wrappers(ctx):
    """inspect finds the state dict under 'state_dict' and FSDP components inside keys."""
    j = J()
    nested = inspect_json(ctx, 'imagenet_checkpoint.pth')
    j.check([(sd['path'], sd['name']) for sd in nested['state_dicts']] ==
            [(['state_dict'], '["state_dict"]')],
            f"state dicts {[(sd['path'], sd['name']) for sd in nested['state_dicts']]}")
    fsdp = inspect_json(ctx, 'fsdp_style.pth')
    j.check('_fsdp_wrapped_module' in fsdp['state_dicts'][0]['wrappers'],
            f"wrappers {fsdp['state_dicts'][0]['wrappers']}")


@case
def inspect_flags_os_system_without_running_it(ctx):
    """inspect on the os.system pickle: exit 0, os.system flagged runs_code, canary absent."""
    j = J()
    canary = Path('/tmp/ckpt_convert_canary')
    if canary.exists():
        canary.unlink()
    report = inspect_json(ctx, 'os_system.pth', bad_input=True)
    flagged = [g['name'] for g in report['globals'] if g['runs_code']]
    j.check(flagged == ['os.system'], f'globals flagged as running code: {flagged}')
    j.check(not canary.exists(), f'{canary} exists: the payload ran')


# ----------------------------------------------------------------------------- bad inputs

@case
def bad_empty_rejected(ctx):
    bad(ctx, 'empty.pth')


@case
def bad_text_rejected(ctx):
    bad(ctx, 'text.pth')


@case
def bad_tar_rejected(ctx):
    bad(ctx, 'tar.pth')


@case
def bad_torchscript_rejected(ctx):
    bad(ctx, 'torchscript.pt')


@case
def bad_truncated_10_rejected(ctx):
    bad(ctx, 'truncated_10.pth')


@case
def bad_truncated_100_rejected(ctx):
    bad(ctx, 'truncated_100.pth')


@case
def bad_truncated_half_rejected(ctx):
    bad(ctx, 'truncated_half.pth')


@case
def bad_truncated_cut30_rejected(ctx):
    bad(ctx, 'truncated_cut30.pth')


@case
def bad_truncated_cut1_rejected(ctx):
    bad(ctx, 'truncated_cut1.pth')


@case
def bad_flipped_pickle_rejected(ctx):
    bad(ctx, 'flipped_pickle.pth')


@case
def bad_missing_record_rejected(ctx):
    bad(ctx, 'missing_record.pth')


@case
def bad_short_storage_rejected(ctx):
    bad(ctx, 'short_storage.pth')


@case
def bad_os_system_rejected(ctx):
    bad(ctx, 'os_system.pth')


@case
def bad_posix_system_rejected(ctx):
    bad(ctx, 'posix_system.pth')


@case
def bad_colliding_rejected(ctx):
    bad(ctx, 'colliding.pth')


@case
def bad_in_equals_out_rejected(ctx):
    bad(ctx, 'IN==OUT', same_file=lambda p: p)


@case
def bad_in_equals_out_other_spelling_rejected(ctx):
    """OUT names IN through 'dir/../dir/file': still the same file."""
    bad(ctx, 'IN==OUT', same_file=lambda p: p.parent / '..' / p.parent.name / p.name)


import cases_rules  # noqa: E402,F401  key rules, presets, rule files, --json: registers its cases here
import cases_hostile  # noqa: E402,F401  attacks, faults, corruption sweep: registers its cases here
import cases_batch, cases_check  # noqa: E402,F401,E401  batch over a zoo, the check gate: register here
import cases_cli  # noqa: E402,F401  the command line's contract (issue 12's bugs): registers here
import cases_pickled_model  # noqa: E402,F401  whole pickled models, torch.save(model): registers here
import cases_safetensors  # noqa: E402,F401  safetensors input (issue 13 item 2): registers here
import cases_safetensors_out  # noqa: E402,F401  safetensors output and dtype casts (issue 13 items 1, 5): registers here
import cases_hf_shards_out  # noqa: E402,F401  --max-shard-size, HF shards out (issue 13 item 4): registers here
import cases_hf_shards  # noqa: E402,F401  HF sharded checkpoints in (issue 13 item 3): registers here
import cases_batch_formats  # noqa: E402,F401  batch over safetensors, shard folders (13.6): registers
import cases_zero  # noqa: E402,F401  DeepSpeed ZeRO run folders in (issue 14 item 1): registers here
import cases_dcp  # noqa: E402,F401  torch DCP folders in (issue 14 item 2): registers here
import cases_batch_runs  # noqa: E402,F401  batch over DeepSpeed and DCP run folders (issue 14 item 4): registers here


# Cases per CTest entry. Each entry is one Python that imports torch once (1-3 s here) and
# forks a child per case (tests/e2e/run_cases.py); small enough that two or more entries keep
# every core busy to the end, and that a failing entry names few cases.
GROUP_SIZE = 10


def groups():
    """The CTest entries: each module's cases in their order, cut into nearly equal runs of at
    most GROUP_SIZE, named MODULE.K (`core` for this file, `zero` for cases_zero.py, ...)."""
    by_module = collections.OrderedDict()
    for name, fn in CASES.items():
        module = fn.__module__
        short = 'core' if module in ('cases', '__main__') else module.removeprefix('cases_')
        by_module.setdefault(short, []).append(name)
    found = collections.OrderedDict()
    for short, names in by_module.items():
        count = -(-len(names) // GROUP_SIZE)
        for k in range(count):
            found[f'{short}.{k + 1}'] = names[k * len(names) // count:(k + 1) * len(names) // count]
    return found


def main(argv):
    if argv[1:] == ['--list']:
        print('\n'.join(CASES))
        return 0
    if argv[1:] == ['--groups']:
        print('\n'.join(groups()))
        return 0
    print(f'usage: {argv[0]} --list | --groups   (run cases with run_case.py or run_cases.py)',
          file=sys.stderr)
    return 2


if __name__ == '__main__':
    sys.exit(main(sys.argv))
