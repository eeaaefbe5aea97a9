"""ckpt-convert e2e cases for torch Distributed Checkpoint folders (issue 14 item 2).

Registered in the registry of cases.py (cases.py imports this module). The fixtures are
tools/sharded_fixtures/dcp.py's, written by ctest's e2e_make_sharded_fixtures into
LARGE_DATA/sharded/dcp/NAME/ (run/, expected.pt, fixture.json).

The contract judged here, with torch 1.13:
- every positive fixture converts (`ckpt-convert NAME/run out.pth [options]`) to what
  expected.pt holds, bit for bit: the same nesting, keys in the same order, tensors of the
  same dtype and shape with equal bits, the same scalars, lists, tuples and strings; a state
  dict loads with torch.load(weights_only=True) and load_state_dict(strict=True) into the
  fixture's model (a whole checkpoint with an optimizer's floats is loaded through the
  judge's safe unpickler: torch 1.13's weights_only unpickler has no BINFLOAT).
- every negative fixture (truncated or missing .distcp, chunks that do not cover or
  overlap, a stream transform, a code-running global) exits 1 with one error line naming
  the file and the cause, writes nothing, and runs nothing.
- `inspect` tells DCP, its torch profile and world size.
"""
import json
import re
import sys
from pathlib import Path

sys.dont_write_bytecode = True     # keep __pycache__ out of the source tree
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from judge import host_cases  # noqa: E402
import sharded  # noqa: E402

cases = host_cases()


def case(fn):
    if fn.__name__ in cases.CASES:
        raise SystemExit(f'cases_dcp.py: case {fn.__name__} is already registered')
    return cases.case(fn)


def J():
    return cases.J()


def fixture(ctx, name):
    return sharded.fixture(ctx, 'dcp', name)


def same(got, want, path='out'):
    """GOT equals WANT: containers of the same type and keys in order, tensors bit for bit."""
    import torch
    j = J()
    if isinstance(want, torch.Tensor):
        j.check(isinstance(got, torch.Tensor), f'{path}: {type(got).__name__}, expected a tensor')
        j.check(got.dtype == want.dtype, f'{path}: dtype {got.dtype}, expected {want.dtype}')
        j.check(got.shape == want.shape, f'{path}: shape {tuple(got.shape)}, expected {tuple(want.shape)}')
        bits = lambda t: t.detach().contiguous().reshape(-1).view(torch.uint8)  # noqa: E731
        j.check(torch.equal(bits(got), bits(want)), f'{path}: values differ')
        return
    j.check(type(got) is type(want) or (isinstance(got, dict) and isinstance(want, dict)),
            f'{path}: {type(got).__name__}, expected {type(want).__name__}')
    if isinstance(want, dict):
        j.check(list(got) == list(want), f'{path}: keys {list(got)}, expected {list(want)}')
        for k in want:
            same(got[k], want[k], f'{path}[{k!r}]')
    elif isinstance(want, (list, tuple)):
        j.check(len(got) == len(want), f'{path}: {len(got)} items, expected {len(want)}')
        for i, (g, w) in enumerate(zip(got, want)):
            same(g, w, f'{path}[{i}]')
    else:
        j.check(got == want, f'{path}: {got!r}, expected {want!r}')


def load_output(out, expected):
    """OUT loaded: with weights_only=True when EXPECTED is a state dict; else with the
    judge's safe unpickler (torch 1.13's weights_only unpickler has no BINFLOAT, so it
    cannot load an optimizer's lr)."""
    import torch
    j = J()
    if isinstance(expected, dict) and all(isinstance(v, torch.Tensor) for v in expected.values()):
        return torch.load(out, weights_only=True)
    blockers = j.weights_only_blockers(out)
    j.check(blockers <= {'opcode BINFLOAT'}, f'torch 1.13 weights_only would refuse {blockers}')
    return j.load(out)


def converts_to_expected(ctx, name):
    import torch
    import models
    j = J()
    folder, spec = fixture(ctx, name)
    out = ctx.out_dir / 'out.pth'
    r = ctx.run(folder / 'run', out, *spec['options'])
    j.check_clean_exit(r)
    j.check(r.rc == 0, f'exit code {r.rc}, expected 0')
    expected = torch.load(folder / 'expected.pt')
    loaded = load_output(out, expected)
    same(loaded, expected)
    if spec['model']:
        models.build(spec['model']).load_state_dict(loaded, strict=True)


def refused(ctx, name, *must_contain):
    j = J()
    folder, spec = fixture(ctx, name)
    pwned = Path('/tmp/ckpt-convert-dcp-pwned')
    pwned.unlink(missing_ok=True)
    r = ctx.run(folder / 'run', ctx.out_dir / 'out.pth')
    j.check_clean_exit(r)
    j.check(r.rc == 1, f'exit code {r.rc}, expected 1')
    j.check_one_error_line(r, must_contain=(spec['error'],) + must_contain)
    j.check(j.listdir(ctx.out_dir) == [], f'output dir holds {j.listdir(ctx.out_dir)}')
    j.check(not pwned.exists(), 'the code-running global ran')


@case
def dcp_113_flat_row_shards_consolidate_to_the_state_dict(ctx):
    """torch 1.13 class paths, no planner_data, uneven row shards on 3 ranks tagged cuda:N,
    one file per item: the flat state dict, bit for bit; strict load into TinyCNN."""
    converts_to_expected(ctx, 't113_flat_rows')


@case
def dcp_113_bytes_item_holding_tensors_decodes(ctx):
    """torch 1.13 saved a nested dict as one BYTE_IO item (a torch.save with tensors)
    beside a ShardedTensor and an int: all three come back as saved."""
    converts_to_expected(ctx, 't113_bytes_with_tensors')


@case
def dcp_22_model_adam_and_scalars_nested_as_saved(ctx):
    """torch 2.0-2.2 class paths, 2.3 flattening (param_groups one item), first-plan dedup,
    an empty trailing rank, getattr-pickled enum: the whole nested checkpoint (model, Adam
    state with 0-dim steps, epoch, a str, an extra dict) equals the original."""
    converts_to_expected(ctx, 't22_nested_adam')


@case
def dcp_22_extract_gives_the_model_state_dict(ctx):
    """--extract on the nested checkpoint: the 'model' state dict alone, strict load into
    TinyLM."""
    import torch
    import models
    j = J()
    folder, _ = fixture(ctx, 't22_nested_adam')
    out = ctx.out_dir / 'model.pth'
    r = ctx.run(folder / 'run', out, '--extract')
    j.check_clean_exit(r)
    j.check(r.rc == 0, f'exit code {r.rc}, expected 0')
    loaded = torch.load(out, weights_only=True)
    same(loaded, torch.load(folder / 'expected.pt')['model'])
    models.build('tiny_lm').load_state_dict(loaded, strict=True)


@case
def dcp_24_boxes_and_dtypes_extract_to_the_model(ctx):
    """torch 2.3+ class paths with storage_meta (PosixPath) and version, 2-D boxes on a
    2x2 mesh with an empty box, bf16/fp16/int64, 2.4 flattening, two files per rank,
    --extract: TinyLM's state dict bit for bit."""
    converts_to_expected(ctx, 't24_boxes_extract')


@case
def dcp_24_boxes_whole_output_keeps_every_dtype(ctx):
    """The same folder without --extract: the model, the optimizer (param_groups rebuilt
    as a list of dicts, betas a tuple) and the bf16/fp16/int64 extras, each as saved."""
    import torch
    j = J()
    folder, _ = fixture(ctx, 't24_boxes_extract')
    out = ctx.out_dir / 'all.pth'
    r = ctx.run(folder / 'run', out)
    j.check_clean_exit(r)
    j.check(r.rc == 0, f'exit code {r.rc}, expected 0')
    loaded = j.load(out)  # an lr float: not for torch 1.13's weights_only
    j.check(list(loaded) == ['model', 'optimizer', 'extra'], f'keys {list(loaded)}')
    same(loaded['model'], torch.load(folder / 'expected.pt'), "out['model']")
    j.check(loaded['extra']['bf'].dtype == torch.bfloat16, 'bf16 extra changed dtype')
    j.check(torch.equal(loaded['extra']['ids'], torch.arange(6).reshape(6, 1)), 'int64 extra differs')
    j.check(loaded['extra']['lrs'] == [0.1, 0.01], f"lrs {loaded['extra']['lrs']}")
    groups = loaded['optimizer']['param_groups']
    j.check(isinstance(groups, list) and groups[0]['betas'] == (0.9, 0.999),
            f'param_groups rebuilt as {groups!r}'[:200])


@case
def dcp_ten_ranks_protocol_5_consolidates(ctx):
    """11 ranks (files __10_0 sort before __2_0), uneven row shards with empty trailing
    ranks, .metadata pickled with protocol 5 (Python 3.14): the nested output equals the
    original."""
    converts_to_expected(ctx, 't24_ten_ranks')


@case
def dcp_inspect_tells_profile_and_world_size(ctx):
    """inspect FOLDER --json: format dcp, dcp_profile 2.0-2.2, world_size 3, the files read."""
    j = J()
    folder, _ = fixture(ctx, 't22_nested_adam')
    r = ctx.run('inspect', folder / 'run', '--json')
    j.check_clean_exit(r)
    j.check(r.rc == 0, f'exit code {r.rc}, expected 0')
    report = json.loads(r.stdout)
    j.check(report['format'] == 'dcp', f"format {report['format']}")
    j.check(report['facts'].get('dcp_profile') == '2.0-2.2', f"facts {report['facts']}")
    j.check(report['facts'].get('world_size') == '3', f"facts {report['facts']}")
    j.check(report['shards'] == ['.metadata', '__0_0.distcp', '__1_0.distcp', '__2_0.distcp'],
            f"files read {report['shards']}")
    j.check_schema(report, 'inspect.schema.json')


@case
def dcp_truncated_distcp_refused(ctx):
    """A rank's .distcp cut short: exit 1 naming the file, the item and 'truncated'."""
    refused(ctx, 'neg_truncated', 'truncated file?', "item 'w'")


@case
def dcp_missing_distcp_refused(ctx):
    """A rank's .distcp missing: exit 1 naming the file."""
    refused(ctx, 'neg_missing_file', 'missing', 'no such file')


@case
def dcp_chunks_not_covering_refused(ctx):
    """A tensor whose chunks leave rows out: exit 1 naming .metadata and the tensor."""
    refused(ctx, 'neg_not_covered', '.metadata', "tensor 'w'")


@case
def dcp_overlapping_chunks_refused(ctx):
    """Two chunks of one tensor overlap: exit 1 naming .metadata and both chunks."""
    refused(ctx, 'neg_overlap', '.metadata', 'overlaps the chunk at offsets (0, 0)')


@case
def dcp_stream_transform_refused(ctx):
    """An item stored through stream.zstd/1 (torch >= 2.7 _extensions): exit 1 naming it."""
    refused(ctx, 'neg_transform', '.metadata', 'not supported')


@case
def dcp_code_running_global_refused_and_not_run(ctx):
    """A .metadata naming os.system (posix.system): exit 1 naming the global; nothing ran."""
    refused(ctx, 'neg_code_global', '.metadata', 'refused')


@case
def dcp_batch_takes_each_folder_as_one_input(ctx):
    """batch over a zoo of DCP folders (two good, one with overlapping chunks): each folder
    one input and one output (NAME.pth, equal to the fixture's expected.pt), the bad one
    failed with its cause (exit 5); a second run skips the two unchanged folders."""
    import shutil
    import torch
    j = J()
    zoo = ctx.in_dir / 'zoo'
    for name, fixture_name in (('cnn', 't113_flat_rows'), ('lm', 't22_nested_adam'),
                               ('bad', 'neg_overlap')):
        folder, _ = fixture(ctx, fixture_name)
        shutil.copytree(folder / 'run', zoo / name)
    r = ctx.run('batch', zoo, '-o', ctx.out_dir / 'zoo')
    j.check_clean_exit(r)
    j.check(r.rc == 5, f'exit code {r.rc}, expected 5 (one input failed)')
    j.check('overlaps the chunk' in r.stderr, 'the failed folder\'s cause is not given')
    cnn_expected = torch.load(fixture(ctx, 't113_flat_rows')[0] / 'expected.pt')
    same(torch.load(ctx.out_dir / 'zoo' / 'cnn.pth', weights_only=True), cnn_expected)
    lm_expected = torch.load(fixture(ctx, 't22_nested_adam')[0] / 'expected.pt')
    same(j.load(ctx.out_dir / 'zoo' / 'lm.pth'), lm_expected)
    j.check(not (ctx.out_dir / 'zoo' / 'bad.pth').exists(), 'the failed folder has an output')
    again = ctx.run('batch', zoo, '-o', ctx.out_dir / 'zoo')
    j.check(again.rc == 5, f'second run: exit code {again.rc}, expected 5')
    j.check(re.search(r'skipped\s+2\b', again.stdout + again.stderr) is not None,
            'second run did not skip the two unchanged folders')


@case
def dcp_corruption_sweep_exits_0_or_names_the_folder(ctx):
    """t24_boxes_extract with one byte flipped (60 places over .metadata and the .distcp
    files) or a file cut short (12 lengths): every run exits 0 with an output the judge
    loads, or 1 with one error line naming a file of the folder; never a crash."""
    import random
    import shutil
    j = J()
    folder, _ = fixture(ctx, 't24_boxes_extract')
    files = sorted(p.name for p in (folder / 'run').iterdir())
    rng = random.Random(14)
    spoils = [(rng.choice(files), 'flip') for _ in range(60)] + \
             [(rng.choice(files), 'cut') for _ in range(12)]
    for n, (name, how) in enumerate(spoils):
        run = ctx.in_dir / f'v{n}'
        shutil.copytree(folder / 'run', run)
        data = bytearray((run / name).read_bytes())
        if how == 'flip':
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        else:
            del data[rng.randrange(len(data)):]
        (run / name).write_bytes(bytes(data))
        out = ctx.out_dir / f'v{n}.pth'
        r = ctx.run(run, out, '--extract')
        j.check_clean_exit(r)
        j.check(r.rc in (0, 1), f'{name} {how}: exit code {r.rc}, expected 0 or 1')
        if r.rc == 0:
            j.load(out)
        else:
            j.check_one_error_line(r, must_contain=(str(run) + '/',))
            j.check(not out.exists(), f'{name} {how}: refused, yet {out.name} was written')
        shutil.rmtree(run)
