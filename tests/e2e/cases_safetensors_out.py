"""ckpt-convert e2e cases for safetensors output and dtype casts (issue 13 items 1 and 5).

Registered in the registry of cases.py (cases.py imports this module). Every output is read
by st_reader.py, the tests' own strict safetensors reader (no code shared with the tool, and
no Python `safetensors` package), and judged against what torch 1.13 loads from the input.

The contract judged here:
- every fixture's model state dict converts to `.safetensors` laid out as the reference
  writer lays it out, with equal tensors, dtypes and shapes, and back to a `.pth` that
  torch.load(weights_only=True) reads equal and that loads strict into the plain model;
- the reference's byte-exact example (`{"test": zeros(2, 2)}`) comes out byte for byte;
- tied weights: each written by default, one kept with `--tied dedupe` (the alias recorded
  in `__metadata__`), both load strict after a round trip, which gives the sharing back;
- views, transposes and disjoint views of one flat buffer are written contiguous;
- a non-tensor entry, an unknown --format and a dtype safetensors lacks are refused, nothing
  written; the report names what was left out (optimizer, epoch);
- `--dtype bf16|fp16` equals torch's `.to(dtype)` bit for bit over an edge set, integers
  untouched, `--keep-dtype` leaves its keys alone.
"""
import json
import struct
import sys
from pathlib import Path

sys.dont_write_bytecode = True     # keep __pycache__ out of the source tree
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from judge import host_cases  # noqa: E402
import st_reader  # noqa: E402

cases = host_cases()


def case(fn):
    if fn.__name__ in cases.CASES:
        raise SystemExit(f'cases_safetensors_out.py: case {fn.__name__} is already registered')
    return cases.case(fn)


def J():
    return cases.J()


# Fixtures whose keys need more than preset unwrap to fit their plain model.
NEEDS_RULES = {'bearpaw_vgg.pth', 'lightning.pth', 'lightning_fabric.pth', 'backbone_aux.pth'}


def expected_state_dict(path, sd_key=None):
    """The model state dict of the input at PATH as torch loads it, keys as preset unwrap
    rewrites them."""
    import torch
    j = J()
    obj = j.load(path, map_location='cpu')
    sd = j.find_model_state_dict(obj, sd_key)
    rules = j.Rules()
    return {rules.key(k): v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def check_tensors_equal(got, want, what):
    import torch
    j = J()
    j.check(set(got) == set(want), f'{what}: names {sorted(set(got) ^ set(want))} differ')
    for name, w in want.items():
        g = got[name]
        j.check(g.dtype == w.dtype, f'{what}: {name}: dtype {g.dtype}, expected {w.dtype}')
        j.check(g.shape == w.shape, f'{what}: {name}: shape {tuple(g.shape)}, expected {tuple(w.shape)}')
        j.check(torch.equal(g.contiguous().view(-1).view(torch.uint8) if g.numel() else g,
                            w.contiguous().view(-1).view(torch.uint8) if w.numel() else w),
                f'{what}: {name}: bytes differ')


def convert_ok(ctx, *args):
    j = J()
    r = ctx.run(*args)
    j.check_clean_exit(r)
    j.check(r.rc == 0, f'exit code {r.rc}, expected 0')
    return r


@case
def safetensors_out_every_fixture_round_trips(ctx):
    """Each small fixture -> .safetensors (read by the strict reader, laid out as the
    reference writer lays it out, equal to the input's model state dict) -> .pth (torch.load
    weights_only equal; strict load into the plain model). dtypes.pth holds a complex128,
    which safetensors has no dtype for: dropped by --drop."""
    import torch
    import models
    j = J()
    done = strict = 0
    for name, fixture in cases.FIXTURES.items():
        if fixture.large:
            continue
        inp = ctx.fixture(name)
        stem = Path(name).stem
        out = ctx.out_dir / f'{stem}.safetensors'
        extra = ['--drop', 'complex128'] if name == 'dtypes.pth' else []
        convert_ok(ctx, inp, out, *extra)
        _, tensors = st_reader.check_writer_layout(out)
        want = expected_state_dict(inp, fixture.sd_key)
        if name == 'dtypes.pth':
            want = {k: v for k, v in want.items() if 'complex128' not in k}
        check_tensors_equal(dict(tensors), want, f'{name} -> safetensors')
        back = ctx.out_dir / f'{stem}.back.pth'
        convert_ok(ctx, out, back)
        loaded = torch.load(back, weights_only=True)
        check_tensors_equal(loaded, want, f'{name} -> safetensors -> pth')
        # Their keys need rules of their own (cases_rules.py judges those).
        if fixture.model is not None and name not in NEEDS_RULES:
            models.build(fixture.model).load_state_dict(loaded, strict=True)
            strict += 1
        done += 1
    j.check(done >= 15 and strict >= 10, f'only {done} fixtures converted, {strict} loaded strict')


@case
def safetensors_out_byte_exact_reference_example(ctx):
    """{"test": zeros(2, 2) float32}: the header the reference writes with metadata
    {"format": "pt"}, padded with spaces to a multiple of 8, then 16 zero bytes. And a
    state dict of several dtypes: the reader's layout check (dtype descending, then name)."""
    import torch
    j = J()
    inp = ctx.in_dir / 'zeros.pth'
    torch.save({'test': torch.zeros(2, 2)}, inp)
    out = ctx.out_dir / 'zeros.safetensors'
    convert_ok(ctx, inp, out)
    text = (b'{"__metadata__":{"format":"pt"},'
            b'"test":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}')
    text += b' ' * (-len(text) % 8)
    want = struct.pack('<Q', len(text)) + text + bytes(16)
    got = out.read_bytes()
    j.check(got == want, f'bytes differ:\n  got  {got!r}\n  want {want!r}')
    mixed = {'b.int': torch.arange(3, dtype=torch.int64), 'a.half': torch.ones(2, dtype=torch.float16),
             'c.flag': torch.tensor([True, False]), 'a.float': torch.ones(3),
             'z.bf16': torch.ones(1, dtype=torch.bfloat16), 'd.byte': torch.ones(4, dtype=torch.uint8)}
    torch.save(mixed, ctx.in_dir / 'mixed.pth')
    convert_ok(ctx, ctx.in_dir / 'mixed.pth', ctx.out_dir / 'mixed.safetensors')
    meta, tensors = st_reader.check_writer_layout(ctx.out_dir / 'mixed.safetensors')
    j.check(meta == {'format': 'pt'}, f'metadata {meta}')
    j.check(list(tensors) == ['b.int', 'a.float', 'z.bf16', 'a.half', 'd.byte', 'c.flag'],
            f'buffer order {list(tensors)}')


@case
def safetensors_out_tied_weights_default_and_dedupe(ctx):
    """tied_weights.pth (lm_head.weight is embed.weight): by default both names are
    written, each with the bytes; with --tied dedupe one name is written (embed.weight, the
    smallest name that spans the storage) and `lm_head.weight: embed.weight` is in
    __metadata__. Both load strict into TinyLM after converting back, and the dedupe round
    trip gives the sharing back."""
    import torch
    import models
    j = J()
    inp = ctx.fixture('tied_weights.pth')
    copy = ctx.out_dir / 'copy.safetensors'
    r = convert_ok(ctx, inp, copy, '--json')
    report = json.loads(r.stdout)
    j.check(report['tied'] == [{'kept': 'embed.weight', 'aliases': ['lm_head.weight'],
                                'deduplicated': False}], f'tied {report["tied"]}')
    meta, tensors = st_reader.check_writer_layout(copy)
    j.check('lm_head.weight' in tensors and 'embed.weight' in tensors, f'names {list(tensors)}')
    j.check(meta == {'format': 'pt'}, f'metadata {meta}')

    dedupe = ctx.out_dir / 'dedupe.safetensors'
    r = convert_ok(ctx, inp, dedupe, '--tied', 'dedupe', '--json')
    j.check(json.loads(r.stdout)['tied'][0]['deduplicated'] is True, 'dedupe not reported')
    meta, tensors = st_reader.check_writer_layout(dedupe)
    j.check('lm_head.weight' not in tensors, 'lm_head.weight written despite --tied dedupe')
    j.check(meta == {'format': 'pt', 'lm_head.weight': 'embed.weight'}, f'metadata {meta}')

    for src, shared in ((copy, False), (dedupe, True)):
        back = ctx.out_dir / (src.stem + '.pth')
        convert_ok(ctx, src, back)
        loaded = torch.load(back, weights_only=True)
        model = models.build('tiny_lm')
        model.load_state_dict(loaded, strict=True)
        same = loaded['lm_head.weight'].data_ptr() == loaded['embed.weight'].data_ptr()
        j.check(same == shared, f'{src.name}: lm_head shares embed: {same}, expected {shared}')
        j.check(torch.equal(loaded['lm_head.weight'], loaded['embed.weight']), 'tied values differ')

    keep = ctx.out_dir / 'keep.safetensors'
    convert_ok(ctx, inp, keep, '--tied', 'dedupe', '--keep-tied', 'lm_head.weight')
    meta, tensors = st_reader.read_safetensors(keep)
    j.check('lm_head.weight' in tensors and 'embed.weight' not in tensors, f'names {list(tensors)}')
    j.check(meta.get('embed.weight') == 'lm_head.weight', f'metadata {meta}')
    r = ctx.run(inp, ctx.out_dir / 'bad.safetensors', '--tied', 'dedupe', '--keep-tied', 'norm.weight')
    j.check(r.rc == 2 and 'norm.weight' in r.stderr, f'--keep-tied of an untied name: rc {r.rc}')
    j.check(not (ctx.out_dir / 'bad.safetensors').exists(), 'output written despite the error')


@case
def safetensors_out_views_and_flat_buffers_written_contiguous(ctx):
    """A transposed weight, a strided slice, an expanded (stride 0) tensor and disjoint
    views of one flat buffer (as FSDP and DeepSpeed keep parameters): each written as the
    tensor it is, none reported as tied. A slice that overlaps another name's bytes but is
    a different view is tied, yet --tied dedupe writes it with its own bytes (only an
    identical view can stand for another)."""
    import torch
    j = J()
    flat = torch.arange(20, dtype=torch.float32)
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    other = torch.arange(30, dtype=torch.float32).reshape(5, 6)
    sd = {'t.weight': base.t(), 'slice': other[:, 1::2], 'expanded': torch.ones(3, 1).expand(3, 4),
          'flat.a': flat[:6].view(2, 3), 'flat.b': flat[6:20].view(7, 2), 'big.t':
          torch.randn(300, 1000).t()}
    inp = ctx.in_dir / 'views.pth'
    torch.save(sd, inp)
    out = ctx.out_dir / 'views.safetensors'
    r = convert_ok(ctx, inp, out, '--json')
    j.check(json.loads(r.stdout)['tied'] == [], 'disjoint views reported as tied')
    _, tensors = st_reader.check_writer_layout(out)
    check_tensors_equal(dict(tensors), {k: v.contiguous() for k, v in sd.items()}, 'views')

    overlapping = {'full': other, 'rows': other[1:3], 'same': other.view(5, 6)}
    torch.save(overlapping, ctx.in_dir / 'overlap.pth')
    out = ctx.out_dir / 'overlap.safetensors'
    r = convert_ok(ctx, ctx.in_dir / 'overlap.pth', out, '--tied', 'dedupe', '--json')
    j.check(json.loads(r.stdout)['tied'] == [{'kept': 'full', 'aliases': ['same'], 'deduplicated': True}],
            f'tied {json.loads(r.stdout)["tied"]}')
    meta, tensors = st_reader.read_safetensors(out)
    j.check(sorted(tensors) == ['full', 'rows'] and meta.get('same') == 'full', f'{list(tensors)}, {meta}')
    convert_ok(ctx, out, ctx.out_dir / 'overlap.pth')
    back = torch.load(ctx.out_dir / 'overlap.pth', weights_only=True)
    check_tensors_equal(back, {k: v.contiguous() for k, v in overlapping.items()}, 'overlap round trip')


@case
def safetensors_out_refusals_leave_nothing(ctx):
    """A state dict with a non-tensor entry (refused naming its key), a complex128 tensor
    (no safetensors dtype), --format of an unknown format (usage), --dtype int8 (usage):
    exit status as documented, nothing written."""
    import torch
    j = J()
    inp = ctx.in_dir / 'mixed.pth'
    torch.save({'w': torch.ones(2), 'step': 7, 'b': torch.zeros(1)}, inp)
    for args, rc, words in (
            ([inp, ctx.out_dir / 'a.safetensors'], 1, ('step', 'not a tensor')),
            ([ctx.fixture('dtypes.pth'), ctx.out_dir / 'b.safetensors'], 1, ('complex128',)),
            ([inp, ctx.out_dir / 'c.pth', '--format', 'onnx'], 2, ('onnx', 'safetensors')),
            ([inp, ctx.out_dir / 'd.safetensors', '--dtype', 'int8'], 2, ('int8',))):
        r = ctx.run(*args)
        j.check(r.rc == rc, f'{args[2:] or args[0].name}: exit code {r.rc}, expected {rc}')
        j.check_one_error_line(r, keywords=words)
    j.check(j.listdir(ctx.out_dir) == [], f'left behind: {j.listdir(ctx.out_dir)}')


@case
def safetensors_out_names_what_was_left_out(ctx):
    """imagenet_checkpoint.pth holds state_dict, optimizer, epoch, …: the safetensors
    output holds the state dict, and the report (text and --json) names the rest. --format
    safetensors writes the format whatever OUT's name."""
    j = J()
    inp = ctx.fixture('imagenet_checkpoint.pth')
    obj = j.load(inp, map_location='cpu')
    r = convert_ok(ctx, inp, ctx.out_dir / 'model.safetensors', '--json')
    report = json.loads(r.stdout)
    j.check_schema(report, 'report.schema.json')
    j.check(report['output_format'] == 'safetensors', f'output_format {report["output_format"]}')
    j.check(report['left_out'] == [k for k in obj if k != 'state_dict'], f'left_out {report["left_out"]}')
    r = convert_ok(ctx, inp, ctx.out_dir / 'weights.bin', '--format', 'safetensors')
    j.check('left out' in r.stderr and 'optimizer' in r.stderr, 'the text report does not say what was left out')
    st_reader.check_writer_layout(ctx.out_dir / 'weights.bin')


def edge_values():
    """The acceptance's edge set in float32: ±0, ±inf, NaN, max float, fp16's 65504 (max),
    65519 (rounds down), 65520 (rounds to inf), 2^-24 (fp16's least subnormal), 2^-25 (a
    tie, to 0), ties to even in bf16 and fp16, float32 and fp16 subnormals, random normals."""
    import torch
    torch.manual_seed(5)
    specials = [0.0, -0.0, float('inf'), float('-inf'), 3.4028234663852886e38, -3.4028234663852886e38,
                float('nan'), 65504.0, 65519.0, 65520.0, -65520.0, 2.0 ** -24, 2.0 ** -25, 3 * 2.0 ** -25,
                2.0 ** -14, 2.0 ** -15, 1e-40, -1e-45, 1.0, 1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8,
                1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11, 1 + 2.0 ** -7 + 2.0 ** -8, 2049.0, 2051.0]
    values = torch.tensor(specials, dtype=torch.float32)
    # Every bf16 and fp16 tie pattern around 1.0 and a spread of exponents.
    bits = torch.arange(0x3F800000, 0x3F800000 + 4096, dtype=torch.int32)
    return torch.cat([values, bits.view(torch.float32), torch.randn(10000) * 1000,
                      torch.randn(1000) * 1e-6])


def check_cast_like_torch(got, want, what):
    """GOT (16-bit) equals torch's cast WANT bit for bit, except that a NaN need only stay
    NaN (the tool writes one documented quiet NaN)."""
    import torch
    j = J()
    a, b = got.contiguous().view(torch.int16), want.contiguous().view(torch.int16)
    nan = torch.isnan(want)
    differ = ((a != b) & ~nan).nonzero().view(-1).tolist()
    j.check(not differ, f'{what}: {len(differ)} values differ from .to(), first at {differ[:1]}')
    j.check(torch.isnan(got)[nan].all(), f'{what}: NaN not kept NaN')


def check_untouched(got, sd):
    """--keep-dtype '^norm\\.' kept norm.weight in float32, bit for bit; the int64 and bool
    tensors are as they were."""
    import torch
    j = J()
    j.check(got['norm.weight'].dtype == torch.float32 and
            torch.equal(got['norm.weight'].view(torch.int32), sd['norm.weight'].view(torch.int32)),
            '--keep-dtype did not keep norm.weight')
    j.check(torch.equal(got['steps'], sd['steps']) and torch.equal(got['mask'], sd['mask']),
            'integer or bool tensors changed')


@case
def safetensors_out_dtype_casts_bit_exact(ctx):
    """--dtype bf16 and fp16: every floating tensor equals torch's .to(dtype) bit for bit
    over the edge set (NaN aside: one documented quiet NaN); an int64 buffer and a bool mask
    untouched; --keep-dtype 'norm' leaves norm.weight in float32; a float64 tensor cast too."""
    import torch
    j = J()
    x = edge_values()
    sd = {'w': x, 'norm.weight': x[:100].clone(), 'steps': torch.arange(5), 'mask': torch.tensor([True, False]),
          'd': x.double()[:500]}
    inp = ctx.in_dir / 'edges.pth'
    torch.save(sd, inp)
    for name, dtype in (('bf16', torch.bfloat16), ('fp16', torch.float16)):
        out = ctx.out_dir / f'{name}.safetensors'
        r = convert_ok(ctx, inp, out, '--dtype', name, '--keep-dtype', '^norm\\.', '--json')
        j.check(json.loads(r.stdout)['dtype'] == str(dtype).replace('torch.', ''), 'dtype not reported')
        _, got = st_reader.check_writer_layout(out)
        for key in ('w', 'd'):
            want = sd[key].to(dtype)
            j.check(got[key].dtype == dtype, f'{name}: {key} is {got[key].dtype}')
            check_cast_like_torch(got[key], want, f'{name}: {key}')
        check_untouched(got, sd)


@case
def pt_out_dtype_casts_bit_exact_sharing_kept(ctx):
    """--dtype on a .pth output: the edge set equals torch's .to() bit for bit (NaN as one
    quiet NaN); integers, bool and --keep-dtype keys untouched; tied names still share one
    storage; views keep their offsets and strides; torch.load(weights_only=True) reads it."""
    import torch
    j = J()
    x = edge_values()
    base = x[:600].clone()
    sd = {'w': x, 'norm.weight': x[:100].clone(), 'steps': torch.arange(5), 'mask': torch.tensor([True, False]),
          'd': x.double()[:500], 'tied.a': base, 'tied.b': base, 'view.t': base.view(20, 30).t(),
          'view.slice': base[100:200]}
    inp = ctx.in_dir / 'edges.pth'
    torch.save(sd, inp)
    for name, dtype in (('bf16', torch.bfloat16), ('fp16', torch.float16)):
        out = ctx.out_dir / f'{name}.pth'
        r = ctx.run(inp, out, '--dtype', name, '--keep-dtype', '^norm\\.', '--json')
        j.check(r.rc == 0, f'{name}: exit code {r.rc}')
        j.check(json.loads(r.stdout)['dtype'] == str(dtype).replace('torch.', ''), 'dtype not reported')
        got = torch.load(out, weights_only=True)
        for key in ('w', 'd', 'tied.a', 'view.t', 'view.slice'):
            want = sd[key].to(dtype)
            j.check(got[key].dtype == dtype, f'{name}: {key} is {got[key].dtype}')
            j.check(got[key].shape == want.shape and got[key].stride() == sd[key].stride(),
                    f'{name}: {key}: shape or stride changed')
            check_cast_like_torch(got[key], want, f'{name}: {key}')
        j.check(got['tied.a'].data_ptr() == got['tied.b'].data_ptr(), f'{name}: tied names no longer share')
        j.check(got['view.t'].storage().data_ptr() == got['tied.a'].storage().data_ptr(),
                f'{name}: a view no longer shares its storage')
        check_untouched(got, sd)


@case
def safetensors_round_trip_of_a_tensor_named_pt_adds_no_key(ctx):
    """A tensor named `pt` beside the `format: pt` metadata every output carries: the round
    trip .pth -> .safetensors -> .pth gives back exactly the input's keys (`format` is no
    alias of `pt`)."""
    import torch
    j = J()
    sd = {'pt': torch.ones(3), 'w': torch.zeros(2)}
    torch.save(sd, ctx.in_dir / 'pt.pth')
    convert_ok(ctx, ctx.in_dir / 'pt.pth', ctx.out_dir / 'pt.safetensors')
    convert_ok(ctx, ctx.out_dir / 'pt.safetensors', ctx.out_dir / 'back.pth')
    back = torch.load(ctx.out_dir / 'back.pth', weights_only=True)
    j.check(sorted(back) == ['pt', 'w'], f'keys after the round trip: {sorted(back)}')


@case
def deployment_outputs_refuse_a_damaged_input_record(ctx):
    """A flipped byte in a .pth's tensor record (its CRC-32 no longer holds): every
    deployment output (.safetensors, --dtype bf16 to both formats, shards of both formats)
    fails verification naming the input record, exit 1, nothing written and no shard folder
    left; the damage is never carried on into a file that reads fine."""
    import shutil
    import zipfile
    j = J()
    damaged = ctx.in_dir / 'damaged.pth'
    shutil.copy(ctx.data / 'dp_tiny_cnn.pth', damaged)
    raw = bytearray(damaged.read_bytes())
    with zipfile.ZipFile(damaged) as z:
        [info] = [i for i in z.infolist() if i.filename.endswith('/data/0')]
    name_length = int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], 'little')
    extra_length = int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], 'little')
    raw[info.header_offset + 30 + name_length + extra_length + 3] ^= 0x01
    damaged.write_bytes(bytes(raw))
    record = f'{damaged}:dp_tiny_cnn/data/0: CRC-32 mismatch'
    for out, *options in (('out.safetensors',),
                          ('out.safetensors', '--dtype', 'bf16'),
                          ('out.pth', '--dtype', 'bf16'),
                          ('shards', '--max-shard-size', '1KB'),
                          ('shards', '--max-shard-size', '1KB', '--format', 'pt')):
        r = ctx.run(damaged, ctx.out_dir / out, *options)
        what = ' '.join([out, *options])
        j.check_clean_exit(r)
        j.check(r.rc == 1, f'{what}: exit code {r.rc}, expected 1')
        j.check_one_error_line(r, must_contain=(record,))
        j.check(j.listdir(ctx.out_dir) == [], f'{what}: output dir holds {j.listdir(ctx.out_dir)}')
