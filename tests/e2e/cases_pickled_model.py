"""ckpt-convert e2e cases for whole pickled models (issue 12, item 8): `torch.save(model)`.

Registered in the registry of cases.py (cases.py imports this module). Each case failed on
the binary before module trees were read (say how in its docstring).

The fixtures are made here, at test time, with torch: models.WholeModel (BatchNorm, nested
children, a None child, Linear(bias=False), a non-persistent and a None buffer, tied
weights) saved whole, plain, wrapped in DataParallel, in the legacy format and inside a
training checkpoint. The contract judged:
- `--extract` writes what `model.state_dict()` gives: its keys in its order (wrapper levels
  unwrapped by the rules), equal tensors, tied ones sharing storage, no `_metadata`; the
  output names no class of the user's (weights_only loads it) and loads strict into a
  fresh model.
- `inspect` names the class and its module (text and `pickled_module` in --json) and says
  that `--extract` gets the weights out.
- converting without `--extract` is refused with a message that says to use it.
"""
import json
import sys
from pathlib import Path

sys.dont_write_bytecode = True     # keep __pycache__ out of the source tree
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


from judge import host_cases  # noqa: E402

cases = host_cases()
CLASS = 'models.WholeModel'


def case(fn):
    if fn.__name__ in cases.CASES:
        raise SystemExit(f'cases_pickled_model.py: case {fn.__name__} is already registered')
    return cases.case(fn)


def J():
    return cases.J()


def whole_model():
    """A models.WholeModel whose buffers are not their initial values (a state dict that
    loads but holds the wrong tensors must fail torch.equal)."""
    import torch
    import models
    torch.manual_seed(12)
    model = models.WholeModel()
    with torch.no_grad():
        model.bn.running_mean.normal_()
        model.bn.running_var.uniform_(0.5, 2.0)
        model.bn.num_batches_tracked.fill_(7)
        for block in (model.body[0], model.body[2]):
            block.scale.normal_()
            block.cache.normal_()
    return model


def save(ctx, obj, name, legacy=False):
    import torch
    path = ctx.in_dir / name
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


def extract(ctx, inp, *options):
    """`ckpt-convert IN OUT --extract OPTIONS`: exit 0, OUT the only output. Returns OUT."""
    j = J()
    out = ctx.out_dir / 'weights.pth'
    r = ctx.run(inp, out, '--extract', *options)
    j.check_clean_exit(r)
    j.check(r.rc == 0, f'exit code {r.rc}, expected 0')
    j.check(j.listdir(ctx.out_dir) == [out.name], f'output dir holds {j.listdir(ctx.out_dir)}')
    return out


def judge_state_dict(out, want, tied=('head.weight', 'body.0.proj.weight')):
    """OUT loads with weights_only=True into exactly WANT (a state_dict(): keys in order,
    equal tensors), names no class of the user's, and the TIED keys share one storage.
    Returns the loaded state dict."""
    import torch
    j = J()
    sd = j.load_weights_only(out)
    j.check(list(sd.keys()) == list(want.keys()),
            f'keys {list(sd.keys())}\n  expected {list(want.keys())}')
    for key, tensor in want.items():
        got = sd[key]
        j.check(type(got) is torch.Tensor, f'{key}: a {type(got).__name__}, expected a Tensor')
        j.check(got.dtype == tensor.dtype and got.shape == tensor.shape,
                f'{key}: {got.dtype} {tuple(got.shape)}, expected {tensor.dtype} {tuple(tensor.shape)}')
        j.check(torch.equal(got, tensor), f'{key}: values differ from model.state_dict()')
    if tied:
        j.check(sd[tied[0]].data_ptr() == sd[tied[1]].data_ptr(),
                f'{tied[0]} and {tied[1]} are tied in the model but not in the output')
    j.check(getattr(sd, '_metadata', None) is None, 'the output has _metadata, which was to be left out')
    pickle_bytes = j.zip_pickle(out)
    j.check(b'WholeModel' not in pickle_bytes and b'models' not in pickle_bytes,
            'the output pickle still names the user\'s class')
    return sd


def loads_strict(sd):
    import models
    models.WholeModel().load_state_dict(sd, strict=True)


# ----------------------------------------------------------------------------- --extract

@case
def extract_whole_pickled_model_gives_its_state_dict(ctx):
    """torch.save(model) (zip): --extract writes model.state_dict() (skipping the None
    parameter, the non-persistent and None buffers and the None child; tied weights stay
    one storage), which loads strict into a fresh model (before: refused, 'no model state
    dict found')."""
    model = whole_model()
    out = extract(ctx, save(ctx, model, 'whole.pth'))
    loads_strict(judge_state_dict(out, model.state_dict()))


@case
def extract_whole_pickled_dataparallel_unwraps_module(ctx):
    """torch.save(DataParallel(model)): the wrapper is a `module` child; the default preset
    unwrap strips it, --preset none keeps DataParallel's own keys (before: refused)."""
    import torch
    j = J()
    model = whole_model()
    wrapped = torch.nn.DataParallel(model)
    inp = save(ctx, wrapped, 'whole_dp.pth')
    out = extract(ctx, inp)
    loads_strict(judge_state_dict(out, model.state_dict()))
    out.unlink()
    out = extract(ctx, inp, '--preset', 'none')
    sd = judge_state_dict(out, wrapped.state_dict(),
                          tied=('module.head.weight', 'module.body.0.proj.weight'))
    j.check(next(iter(sd)) == 'module.conv.weight', 'the wrapper level is not in the keys')


@case
def extract_whole_pickled_model_legacy_format(ctx):
    """_use_new_zipfile_serialization=False: the class arrives as a ('module', class,
    source file, source) persistent id; --extract writes the same state dict (before:
    refused)."""
    model = whole_model()
    out = extract(ctx, save(ctx, model, 'whole_legacy.pth', legacy=True))
    loads_strict(judge_state_dict(out, model.state_dict()))


@case
def extract_whole_pickled_model_under_training_checkpoint_key(ctx):
    """{'epoch': 3, 'model': model}: --extract and --extract=model find the model under
    'model' (before: refused, ''model' is not a state dict')."""
    model = whole_model()
    inp = save(ctx, {'epoch': 3, 'model': model}, 'train.pth')
    for option in ('--extract', '--extract=model'):
        out = ctx.out_dir / 'weights.pth'
        r = ctx.run(inp, out, option)
        J().check(r.rc == 0, f'{option}: exit code {r.rc}, expected 0')
        loads_strict(judge_state_dict(out, model.state_dict()))
        out.unlink()


# ----------------------------------------------------------------------------- convert, inspect

@case
def convert_whole_pickled_model_without_extract_says_use_extract(ctx):
    """Without --extract the model object cannot be written (loading it needs its class):
    refused, exit 1, nothing written, the message names the model and says --extract
    (before: 'refusing to write global', which did not say that it is a whole model)."""
    j = J()
    inp = save(ctx, whole_model(), 'whole.pth')
    r = ctx.run(inp, ctx.out_dir / 'out.pth')
    j.check_clean_exit(r)
    j.check(r.rc == 1, f'exit code {r.rc}, expected 1')
    j.check_one_error_line(r, must_contain=[
        f'{inp}:whole/data.pkl: a whole pickled model ({CLASS} at (top level)): loading it in '
        'Python needs its class\'s code; use --extract to write its state dict'])
    j.check(j.listdir(ctx.out_dir) == [], f'output dir holds {j.listdir(ctx.out_dir)}')


@case
def inspect_names_whole_pickled_model_class(ctx):
    """inspect says what the file is: the class and its module, in text and as
    `pickled_module` in --json (null for a state dict), and that --extract gets the weights
    out (before: no such line or field)."""
    import torch
    j = J()
    inp = save(ctx, torch.nn.DataParallel(whole_model()), 'whole_dp.pth')
    r = ctx.run('inspect', inp)
    j.check(r.rc == 0, f'inspect: exit code {r.rc}, expected 0')
    j.check('  whole pickled model: torch.nn.parallel.data_parallel.DataParallel at (top level)\n'
            '    loading it needs its class\'s code; --extract writes its weights as the state '
            'dict model.state_dict() gives\n' in r.stdout, 'inspect does not name the class')
    r = ctx.run('inspect', inp, '--json')
    j.check(r.rc == 0, f'inspect --json: exit code {r.rc}, expected 0')
    report = json.loads(r.stdout)
    got = report.get('pickled_module', 'missing')
    want = {'class': 'DataParallel', 'module': 'torch.nn.parallel.data_parallel', 'path': '(top level)'}
    j.check(got == want, f'pickled_module {got}, expected {want}')
    # The state dict --extract writes, in place of the modules' `_parameters` dicts.
    got = [(sd['name'], sd['tensors'], sd['wrappers']) for sd in report['state_dicts']]
    want = [('state_dict() of (top level)', 12, {'module.': 12})]
    j.check(got == want, f'state dicts {got}, expected {want}')
    inp = save(ctx, {'model': whole_model()}, 'train.pth')
    got = json.loads(ctx.run('inspect', inp, '--json').stdout).get('pickled_module', 'missing')
    want = {'class': 'WholeModel', 'module': 'models', 'path': '["model"]'}
    j.check(got == want, f'pickled_module {got}, expected {want}')
    r = ctx.run('inspect', ctx.fixture('dp_tiny_cnn.pth'), '--json')
    got = json.loads(r.stdout).get('pickled_module', 'missing')
    j.check(got is None, f'a state dict: pickled_module {got}, expected null')
