"""ckpt-convert e2e cases for DeepSpeed ZeRO run folders (issue 14 item 1).

Registered in the registry of cases.py (cases.py imports this module). The fixtures are
written by tools/sharded_fixtures/zero.py into LARGE_DATA/sharded/zero/NAME/ (run/, the
input; expected.pt; fixture.json {model, options, error}), by ctest's
e2e_make_sharded_fixtures or by hand:
    /usr/bin/python3 tools/make_sharded_fixtures.py --out build/fixtures/sharded --only zero

The contract judged here:
- every positive fixture converts (`ckpt-convert RUN out.pth [options]`, exit 0) to a file
  torch.load(weights_only=True) reads as expected.pt bit for bit: the same keys in the same
  order, the same dtypes (int64 BatchNorm counters stay int64), torch.equal values, the
  `_metadata` kept; tied names share one storage; load_state_dict(strict=True) into the
  model works.
- every negative fixture exits 1 with one error line naming the file and the cause, and
  nothing is written.
- `inspect RUN` reports the format, the stage, the DeepSpeed version and the world size.
"""
import json
import sys
from pathlib import Path

sys.dont_write_bytecode = True     # keep __pycache__ out of the source tree
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from judge import host_cases  # noqa: E402
import sharded  # noqa: E402

cases = host_cases()

POSITIVE = ('stage2_tiny_cnn', 'stage1_plain_12_ranks', 'stage2_tiny_lm_tied_frozen',
            'stage3_tiny_lm_tag_folder', 'stage3_tiny_cnn_5_ranks', 'bf16_optimizer_vgg',
            'old_0_5_8_with_tag', 'old_0_4_single_param_shapes')
NEGATIVE = ('neg_missing_rank', 'neg_extra_stale_rank', 'neg_sizes_do_not_add_up',
            'neg_mp_rank_01', 'neg_moe_expert_files', 'neg_nvme_offload',
            'neg_code_running_global')


def case(fn):
    if fn.__name__ in cases.CASES:
        raise SystemExit(f'cases_zero.py: case {fn.__name__} is already registered')
    return cases.case(fn)


def J():
    return cases.J()


def fixture_dir(ctx, name):
    return sharded.fixture(ctx, 'zero', name)


def convert_fixture(ctx, name, rc):
    """Runs `ckpt-convert RUN OUT OPTIONS` on fixture NAME, which must exit RC."""
    j = J()
    folder, spec = fixture_dir(ctx, name)
    out = ctx.out_dir / 'out.pth'
    r = ctx.run(folder / 'run', out, *spec['options'])
    j.check_clean_exit(r)
    j.check(r.rc == rc, f'exit {r.rc}, expected {rc}')
    return folder, spec, r, out


def check_consolidates(ctx, name):
    import torch
    import models
    j = J()
    folder, spec, _, out = convert_fixture(ctx, name, 0)
    got = j.load_weights_only(out)
    expected = torch.load(folder / 'expected.pt')
    j.check(list(got) == list(expected),
            f'keys {list(got)} differ from expected {list(expected)}')
    for key, want in expected.items():
        have = got[key]
        j.check(have.dtype == want.dtype, f'{key}: dtype {have.dtype}, expected {want.dtype}')
        j.check(have.shape == want.shape, f'{key}: shape {tuple(have.shape)}, expected '
                                          f'{tuple(want.shape)}')
        same = torch.equal(have.reshape(-1).view(torch.uint8) if have.numel() else have,
                           want.reshape(-1).view(torch.uint8) if want.numel() else want)
        j.check(same, f'{key}: values differ from expected.pt (not bit for bit)')
    j.check(getattr(got, '_metadata', None) == getattr(expected, '_metadata', None),
            'the _metadata of the model file is not kept')
    # Names tied in the model: one storage in the output, as in expected.pt.
    by_ptr = {}
    for key, want in expected.items():
        by_ptr.setdefault((want.storage().data_ptr(), want.storage_offset()), []).append(key)
    for keys in by_ptr.values():
        if len(keys) > 1 and expected[keys[0]].numel():
            ptrs = {got[k].storage().data_ptr() for k in keys}
            j.check(len(ptrs) == 1, f'tied names {keys} do not share one storage in the output')
    if spec['model']:
        model = models.build(spec['model'])
        model.load_state_dict(got, strict=True)
    return got


def check_refused(ctx, name):
    j = J()
    _, spec, r, _ = convert_fixture(ctx, name, 1)
    j.check_one_error_line(r, must_contain=[spec['error']])
    j.check(not any(ctx.out_dir.iterdir()), f'something was written: {j.listdir(ctx.out_dir)}')


def _register(name, check):
    def run(ctx):
        check(ctx, name)
    run.__name__ = f'zero_{name}'
    run.__doc__ = f'DeepSpeed fixture {name}: ' + (
        'consolidates bit for bit to expected.pt' if check is check_consolidates
        else 'refused, exit 1, file and cause named, nothing written')
    case(run)


for _name in POSITIVE:
    _register(_name, check_consolidates)
for _name in NEGATIVE:
    _register(_name, check_refused)


@case
def zero_every_fixture_has_a_case(ctx):
    """The fixtures zero.py writes are exactly the ones judged here."""
    j = J()
    root = ctx.large_data / 'sharded' / 'zero' if ctx.large_data else None
    j.check(root is not None and root.is_dir(), f'no ZeRO fixtures at {root}')
    found = sorted(p.name for p in root.iterdir() if (p / 'fixture.json').is_file())
    j.check(found == sorted(POSITIVE + NEGATIVE), f'fixtures {found} are not the judged ones')


@case
def zero_integer_buffers_keep_their_dtype(ctx):
    """BatchNorm's num_batches_tracked stays int64 (zero_to_fp32 makes it float32)."""
    import torch
    got = check_consolidates(ctx, 'stage2_tiny_cnn')
    J().check(got['bn.num_batches_tracked'].dtype == torch.int64,
              f"bn.num_batches_tracked is {got['bn.num_batches_tracked'].dtype}")
    J().check(got['conv.weight'].dtype == torch.float32, 'the masters are not fp32')


@case
def zero_tied_weights_share_one_storage(ctx):
    """lm_head.weight IS embed.weight: one storage in the output, stage 2 and stage 3."""
    for name in ('stage2_tiny_lm_tied_frozen', 'stage3_tiny_lm_tag_folder'):
        got = check_consolidates(ctx, name)
        J().check(got['lm_head.weight'].storage().data_ptr()
                  == got['embed.weight'].storage().data_ptr(),
                  f'{name}: lm_head.weight is a copy, not a view of embed.weight')
        for p in ctx.out_dir.iterdir():
            p.unlink()


@case
def zero_inspect_tells_stage_version_and_world_size(ctx):
    """inspect RUN: format deepspeed, stage, ds_version, world size, tag."""
    j = J()
    folder, _ = fixture_dir(ctx, 'stage1_plain_12_ranks')
    r = ctx.run('inspect', folder / 'run', '--json')
    j.check(r.rc == 0, f'exit {r.rc}')
    report = json.loads(r.stdout)
    j.check(report.get('format') == 'deepspeed', f"format {report.get('format')}")
    facts = report.get('facts', {})
    for key, want in (('deepspeed_stage', '1'), ('ds_version', '0.10.0'), ('world_size', '12'),
                      ('bf16_optimizer', 'no'), ('tag', 'global_step40')):
        j.check(facts.get(key) == want, f'fact {key}: {facts.get(key)!r}, expected {want!r}')


@case
def zero_batch_takes_each_run_folder_as_one_input(ctx):
    """batch over a zoo of a run folder, a tag folder and a .pth: three inputs (no rank file
    converted on its own), each output equal to its expected.pt; a second run skips all
    three; a changed rank file reconverts its run only."""
    import shutil
    import torch
    import cases_batch as cb
    j = J()
    zoo = ctx.work / 'zoo'
    runs = {'runs/zero2': 'stage2_tiny_cnn', 'runs/global_step5': 'stage3_tiny_lm_tag_folder'}
    for rel, name in runs.items():
        shutil.copytree(fixture_dir(ctx, name)[0] / 'run', zoo / rel)
    shutil.copyfile(ctx.data / 'dp_tiny_cnn.pth', zoo / 'dp_tiny_cnn.pth')
    r = cb.batch(ctx, zoo, '-o', ctx.out_dir)
    j.check(r.rc == 0, f'exit {r.rc}, expected 0')
    recs = cb.by_path(cb.read_report(ctx.out_dir / cb.REPORT))
    j.check(sorted(recs) == sorted([f'{rel}.pth' for rel in runs] + ['dp_tiny_cnn.pth']),
            f'inputs {sorted(recs)}: each run folder must be one input')
    for rel, name in runs.items():
        j.check(recs[f'{rel}.pth']['status'] == 'converted', f'{rel}: {recs[f"{rel}.pth"]["status"]}')
        got = j.load_weights_only(ctx.out_dir / f'{rel}.pth')
        expected = torch.load(fixture_dir(ctx, name)[0] / 'expected.pt')
        j.check(list(got) == list(expected), f'{rel}: keys differ')
        j.check(all(torch.equal(got[k], expected[k]) for k in expected), f'{rel}: values differ')
    r = cb.batch(ctx, zoo, '-o', ctx.out_dir)
    recs = cb.by_path(cb.read_report(ctx.out_dir / cb.REPORT))
    j.check(all(rec['status'] == 'skipped' for rec in recs.values()),
            f'second run: {[(p, rec["status"]) for p, rec in recs.items()]}')
    # A run folder is stamped by its files' sizes and mtimes, not their CRC-32
    # (docs/batch.md; cases_batch_runs.py judges touched files): only the run whose
    # rank file changed is converted again.
    (zoo / 'runs/global_step5/zero_pp_rank_1_mp_rank_00_model_states.pt').write_bytes(
        (zoo / 'runs/global_step5/zero_pp_rank_0_mp_rank_00_model_states.pt').read_bytes())
    r = cb.batch(ctx, zoo, '-o', ctx.out_dir)
    recs = cb.by_path(cb.read_report(ctx.out_dir / cb.REPORT))
    status = {p: rec['status'] for p, rec in recs.items()}
    j.check(status == {'runs/zero2.pth': 'skipped', 'runs/global_step5.pth': 'converted',
                       'dp_tiny_cnn.pth': 'skipped'}, f'third run: {status}')


@case
def zero_check_passes_on_a_run_saved_from_gpus(ctx):
    """check RUN: the rank files' storages are tagged cuda:N, the consolidated state dict's
    are cpu: it passes on a machine without CUDA, and names no global that runs code."""
    j = J()
    folder, _ = fixture_dir(ctx, 'stage3_tiny_cnn_5_ranks')
    r = ctx.run('check', folder / 'run')
    j.check_clean_exit(r)
    j.check(r.rc == 0, f'exit {r.rc}, expected 0')
    j.check('check passed' in r.stderr + r.stdout, 'check did not pass')


@case
def zero_cast_to_bf16_is_the_masters_cast_by_torch(ctx):
    """ZeRO-2 and ZeRO-3 runs (one with tied and frozen parameters) with --dtype bf16, verified (the cast checked as it is
    written, the output reread, the rank-file records proven by what was read): to .pth and
    to .safetensors, every floating tensor equals torch's own `.to(torch.bfloat16)` of the
    expected fp32 master bit for bit, integer buffers keep their dtype and values."""
    import torch
    j = J()
    for name in ('stage2_tiny_cnn', 'stage3_tiny_cnn_5_ranks', 'stage2_tiny_lm_tied_frozen'):
        folder, spec = fixture_dir(ctx, name)
        expected = torch.load(folder / 'expected.pt')
        for out in (ctx.out_dir / f'{name}.pth', ctx.out_dir / f'{name}.safetensors'):
            r = ctx.run(folder / 'run', out, '--dtype', 'bf16', *spec['options'])
            j.check_clean_exit(r)
            j.check(r.rc == 0, f'{out.name}: exit {r.rc}: {r.stderr}')
            if r.rc != 0:
                continue
            if out.suffix == '.pth':
                got = j.load_weights_only(out)
            else:
                got = sharded_safetensors_load(out)
                j.check(set(got) == set(expected), f'{out.name}: names {sorted(got)}')
            for key, want in expected.items():
                cast = want.to(torch.bfloat16) if want.is_floating_point() else want
                have = got[key]
                j.check(have.dtype == cast.dtype, f'{out.name}: {key} is {have.dtype}, expected {cast.dtype}')
                same = have.shape == cast.shape and torch.equal(
                    have.reshape(-1).view(torch.uint8) if have.numel() else have,
                    cast.reshape(-1).view(torch.uint8) if cast.numel() else cast)
                j.check(same, f'{out.name}: {key} is not torch\'s bf16 cast of the master')


def sharded_safetensors_load(path):
    """The tensors of a .safetensors file, read by the tests' own strict reader (which also
    checks the layout the reference writer gives)."""
    import st_reader
    _, tensors = st_reader.check_writer_layout(path)
    return tensors


@case
def zero_damaged_rank_file_refused_not_consolidated(ctx):
    """A flipped byte in every tensor record of rank 0's optimizer file (its fp32 partition
    among them): the pieces carry no CRC-32 of their own, so the records they come from are
    checked whole. convert (to .pth and to .safetensors, as they are or cast to bf16) exits 1 naming a record of that
    file and the CRC-32 mismatch, nothing written; `check RUN` fails naming it. Before, the damage was consolidated into
    a file that loads fine (as zero_to_fp32.py would: torch.load does not check the CRCs)."""
    import shutil
    import zipfile
    j = J()
    folder, _ = fixture_dir(ctx, 'stage2_tiny_cnn')
    run = ctx.in_dir / 'run'
    shutil.copytree(folder / 'run', run)
    [rank0] = run.glob('*/zero_pp_rank_0_mp_rank_00_optim_states.pt')
    raw = bytearray(rank0.read_bytes())
    with zipfile.ZipFile(rank0) as z:
        for info in z.infolist():
            if '/data/' in info.filename and info.file_size >= 8:
                at = info.header_offset
                start = at + 30 + int.from_bytes(raw[at + 26:at + 28], 'little') \
                    + int.from_bytes(raw[at + 28:at + 30], 'little')
                raw[start + info.file_size // 2] ^= 0x40
    rank0.write_bytes(bytes(raw))
    for out, options in (('out.pth', []), ('out.safetensors', []), ('bf16.pth', ['--dtype', 'bf16']),
                         ('bf16.safetensors', ['--dtype', 'bf16'])):
        r = ctx.run(run, ctx.out_dir / out, *options)
        j.check_clean_exit(r)
        j.check(r.rc == 1, f'{out}: exit {r.rc}, expected 1')
        j.check_one_error_line(r, must_contain=(f'{rank0}:', 'CRC-32 mismatch'))
        j.check(j.listdir(ctx.out_dir) == [], f'output dir holds {j.listdir(ctx.out_dir)}')
    r = ctx.run('check', run)
    j.check_clean_exit(r)
    j.check(r.rc == 3, f'check: exit {r.rc}, expected 3')
    j.check(f'record {rank0}:' in r.stderr + r.stdout and 'do not match the CRC-32' in r.stderr + r.stdout,
            'check does not name the damaged record')
