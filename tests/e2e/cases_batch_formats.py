"""ckpt-convert e2e cases for `batch` over zoos of several formats (issue 13 item 6, batch part).

Registered in the registry of cases.py (cases.py imports this module). Every case builds its
zoo at test time: a torch.save `.pth`, a `.safetensors` file (cases_safetensors.write_safetensors),
a folder of safetensors shards and a folder of torch.save `.bin` shards, each with its HF index
(cases_hf_shards.write_st_shards / write_bin_shards).

The contract judged here:
- a folder holding an HF index is ONE input (the folder) when the globs match one of its
  files (the defaults match every shard), its shards are not taken one by one
  (-v says `in the HF shard folder F (converted as one input)` for each); `*.safetensors`
  files are taken by default.
- the output's name follows the format written: pt (the default) keeps a file's name but
  turns `x.safetensors` into `x.pth` and a shard folder `F` into `F.pth`; `--format
  safetensors` writes `<name without extension>.safetensors` (`F.safetensors` for a folder);
  `--max-shard-size` makes every output a folder `<name without extension>/` of shards.
- every output holds its input's tensors: torch.load(weights_only=True) on torch 1.13, or
  the strict st_reader for safetensors files and shard folders.
- a second run skips everything; a touched shard (same bytes) is still up to date; a shard
  with new bytes reconverts its folder only; a folder output missing a file is redone.
- each record validates against docs/batch.schema.json, with `output_format`, `dtype` and
  `shards` (a folder output's files).
"""
import json
import os
import sys
from pathlib import Path

sys.dont_write_bytecode = True     # keep __pycache__ out of the source tree
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from judge import host_cases  # noqa: E402
import cases_batch as cb  # noqa: E402
import cases_hf_shards as hf  # noqa: E402
import cases_safetensors as st  # noqa: E402
import st_reader  # noqa: E402

cases = host_cases()
J = st.J

# zoo path -> output path under OUTDIR, per naming
INPUTS = ['vision/a.pth', 'nlp/b.safetensors', 'hf/st_model', 'hf/bin_model']
NAMES = {
    'pt': ['vision/a.pth', 'nlp/b.pth', 'hf/st_model.pth', 'hf/bin_model.pth'],
    'safetensors': ['vision/a.safetensors', 'nlp/b.safetensors', 'hf/st_model.safetensors',
                    'hf/bin_model.safetensors'],
    'shards': ['vision/a', 'nlp/b', 'hf/st_model', 'hf/bin_model'],
}
ARGS = {'pt': (), 'safetensors': ('--format', 'safetensors'), 'shards': ('--max-shard-size', '1KB')}
FORMATS = {'pt': 'pt', 'safetensors': 'safetensors', 'shards': 'safetensors-shards'}


def case(fn):
    if fn.__name__ in cases.CASES:
        raise SystemExit(f'cases_batch_formats.py: case {fn.__name__} is already registered')
    return cases.case(fn)


def state_dict(seed, n=6):
    """N float32 tensors of 256 to 768 bytes and an int64 counter, from SEED: over 1K in all,
    so that --max-shard-size 1KB splits it."""
    import torch
    torch.manual_seed(seed)
    sd = {f'layer{i}.weight': torch.randn(16 * (i % 3 + 1), 4) for i in range(n)}
    sd['steps'] = torch.tensor(seed)
    return sd


def make_zoo(ctx):
    """The four inputs under WORK/zoo, and a README the globs do not take; returns
    (zoo folder, {zoo path: the state dict it holds})."""
    import torch
    zoo = ctx.work / 'zoo'
    sds = {rel: state_dict(seed) for seed, rel in enumerate(INPUTS, 1)}
    (zoo / 'vision').mkdir(parents=True)
    torch.save(sds['vision/a.pth'], zoo / 'vision/a.pth')
    (zoo / 'nlp').mkdir()
    st.write_safetensors(zoo / 'nlp/b.safetensors', sds['nlp/b.safetensors'], metadata={'format': 'pt'})
    hf.write_st_shards(zoo / 'hf/st_model', sds['hf/st_model'], n=3)
    hf.write_bin_shards(zoo / 'hf/bin_model', sds['hf/bin_model'], n=2)
    (zoo / 'README.md').write_text('not a checkpoint\n')
    return zoo, sds


def run_batch(ctx, zoo, naming, *extra, rc=0):
    j = J()
    r = cb.batch(ctx, zoo, '-o', ctx.out_dir, '--jobs', '2', *ARGS[naming], *extra)
    j.check(r.rc == rc, f'exit code {r.rc}, expected {rc}')
    return r


def records(ctx):
    return cb.by_path(cb.read_report(ctx.out_dir / cb.REPORT))


def read_output(path):
    """The state dict at PATH: a torch file, a safetensors file, or a folder of shards."""
    import torch
    path = Path(path)
    if path.is_dir():
        index = path / 'model.safetensors.index.json'
        if not index.exists():
            return dict(st_reader.read_safetensors(path / 'model.safetensors')[1])
        out = {}
        weight_map = json.loads(index.read_text())['weight_map']
        for shard in sorted(set(weight_map.values())):
            out.update(st_reader.read_safetensors(path / shard)[1])
        J().check(sorted(out) == sorted(weight_map), f'{path}: shards hold {sorted(out)}, index {sorted(weight_map)}')
        return out
    if path.suffix == '.safetensors':
        return dict(st_reader.read_safetensors(path)[1])
    return torch.load(path, weights_only=True)


def check_equal(path, expected):
    import torch
    j = J()
    got = read_output(path)
    j.check(sorted(got) == sorted(expected), f'{path}: keys {sorted(got)}, expected {sorted(expected)}')
    for name, want in expected.items():
        j.check(got[name].dtype == want.dtype and torch.equal(got[name], want),
                f'{path}: {name}: differs from the input')


def check_zoo(ctx, sds, naming):
    """OUTDIR holds one output per input, named by NAMING, each equal to its input; the
    report has one valid record each, with the output format; nothing else was taken."""
    j = J()
    recs = records(ctx)
    j.check(sorted(recs) == sorted(NAMES[naming]), f'report paths {sorted(recs)}, expected {sorted(NAMES[naming])}')
    for rel, out in zip(INPUTS, NAMES[naming]):
        check_equal(ctx.out_dir / out, sds[rel])
        rec = recs[out]
        j.check(rec['output_format'] == FORMATS[naming], f'{out}: output_format {rec["output_format"]!r}')
        j.check(rec['dtype'] is None, f'{out}: dtype {rec["dtype"]!r}')
        j.check(bool(rec['shards']) == (naming == 'shards'), f'{out}: shards {rec["shards"]}')
        if naming == 'shards':
            listed = sorted(s['file'] for s in rec['shards'])
            j.check(listed == j.listdir(ctx.out_dir / out), f'{out}: shards {listed}, folder {j.listdir(ctx.out_dir / out)}')
            j.check(rec['output_bytes'] == sum(s['bytes'] for s in rec['shards']), f'{out}: output_bytes')
    return recs


def statuses(recs):
    return {path: (r['status'], r['reason']) for path, r in recs.items()}


@case
def batch_formats_zoo_to_pt_one_input_per_shard_folder(ctx):
    """Default format: the .pth keeps its name, the .safetensors becomes .pth, each shard
    folder one F.pth (no shard converted on its own), all loadable with weights_only=True."""
    zoo, sds = make_zoo(ctx)
    run_batch(ctx, zoo, 'pt')
    recs = check_zoo(ctx, sds, 'pt')
    J().check(all(r['status'] == 'converted' for r in recs.values()), f'statuses {statuses(recs)}')
    expected = set(NAMES['pt']) | {cb.sidecar_of(p) for p in NAMES['pt']} | {cb.REPORT}
    J().check(cb.out_files(ctx.out_dir) == expected, f'output tree {sorted(cb.out_files(ctx.out_dir))}')


@case
def batch_formats_zoo_to_safetensors_named_after_format(ctx):
    """--format safetensors: a/b.pth -> a/b.safetensors, shard folders -> F.safetensors, each
    read by the strict reader as its input's tensors."""
    zoo, sds = make_zoo(ctx)
    run_batch(ctx, zoo, 'safetensors')
    check_zoo(ctx, sds, 'safetensors')
    for out in NAMES['safetensors']:
        st_reader.check_writer_layout(ctx.out_dir / out)


@case
def batch_formats_max_shard_size_one_folder_per_input(ctx):
    """--max-shard-size 1KB: every output a folder of shards named without the extension;
    the 3-shard input gives several shards and an index; the report lists each folder's files."""
    zoo, sds = make_zoo(ctx)
    run_batch(ctx, zoo, 'shards')
    recs = check_zoo(ctx, sds, 'shards')
    j = J()
    j.check(any(len(r['shards']) > 2 for r in recs.values()), 'no output was split into several shards')


@case
def batch_formats_second_run_skips_everything(ctx):
    """Resuming: a second run (each naming) skips every input, files and folders alike, and a
    touched shard with the same bytes does not change that."""
    j = J()
    zoo, sds = make_zoo(ctx)
    for naming in ('pt', 'shards'):
        run_batch(ctx, zoo, naming)
        sizes = {path: r['input_bytes'] for path, r in records(ctx).items()}
        run_batch(ctx, zoo, naming)
        recs = records(ctx)
        j.check(set(statuses(recs).values()) == {('skipped', 'up to date')}, f'{naming}: {statuses(recs)}')
        j.check({path: r['input_bytes'] for path, r in recs.items()} == sizes,
                f'{naming}: input_bytes {recs}, converted with {sizes}')
        check_zoo(ctx, sds, naming)
    shard = zoo / 'hf/st_model/model-00002-of-00003.safetensors'
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
    run_batch(ctx, zoo, 'shards')
    recs = records(ctx)
    j.check(set(statuses(recs).values()) == {('skipped', 'up to date')}, f'after touch: {statuses(recs)}')


@case
def batch_formats_changed_shard_reconverts_that_folder_only(ctx):
    """A shard given new bytes (same size): its folder is converted again ('input changed'),
    the other inputs are skipped, and the output holds the new values; so for a .bin shard."""
    import torch
    j = J()
    zoo, sds = make_zoo(ctx)
    for naming in ('pt', 'shards'):
        run_batch(ctx, zoo, naming)
    folder = zoo / 'hf/bin_model'
    shard = folder / 'pytorch_model-00001-of-00002.bin'
    part = torch.load(shard, weights_only=True)
    for name in part:
        if part[name].is_floating_point():
            part[name] = part[name] + 1
            sds['hf/bin_model'][name] = part[name]
    torch.save(part, shard)
    for naming in ('pt', 'shards'):
        run_batch(ctx, zoo, naming)
        recs = records(ctx)
        changed = NAMES[naming][INPUTS.index('hf/bin_model')]
        want = {p: ('converted', 'input changed') if p == changed else ('skipped', 'up to date')
                for p in NAMES[naming]}
        j.check(statuses(recs) == want, f'{naming}: {statuses(recs)}, expected {want}')
        check_zoo(ctx, sds, naming)


@case
def batch_formats_folder_output_missing_a_file_is_redone(ctx):
    """A folder output that lost a shard is not up to date ('output changed'): redone whole."""
    j = J()
    zoo, sds = make_zoo(ctx)
    run_batch(ctx, zoo, 'shards')
    out = ctx.out_dir / 'hf/st_model'
    shards = [n for n in j.listdir(out) if n.startswith('model-')]
    j.check(len(shards) > 1, f'{out}: {j.listdir(out)}')
    (out / shards[0]).unlink()
    run_batch(ctx, zoo, 'shards')
    recs = records(ctx)
    j.check(statuses(recs)['hf/st_model'] == ('converted', 'output changed'), f'{statuses(recs)}')
    check_zoo(ctx, sds, 'shards')


@case
def batch_formats_failed_folder_input_removes_its_stale_folder_output(ctx):
    """A shard folder whose shard is then truncated fails (exit 5, the shard named), and its
    folder output of the earlier run is removed with its sidecar; the others are skipped."""
    j = J()
    zoo, sds = make_zoo(ctx)
    run_batch(ctx, zoo, 'shards')
    shard = zoo / 'hf/st_model/model-00001-of-00003.safetensors'
    shard.write_bytes(shard.read_bytes()[:40])
    r = run_batch(ctx, zoo, 'shards', rc=5)
    recs = records(ctx)
    rec = recs['hf/st_model']
    j.check(rec['status'] == 'failed' and rec['stale_output'] == 'removed', f'record {rec}')
    j.check('model-00001-of-00003.safetensors' in rec['error'], f'error {rec["error"]!r}')
    j.check(cb.ERROR_PREFIX in r.stderr, f'stderr {r.stderr[-400:]}')
    j.check(not (ctx.out_dir / 'hf/st_model').exists(), f'stale output left: {j.listdir(ctx.out_dir / "hf")}')
    j.check(not (ctx.out_dir / cb.sidecar_of('hf/st_model')).exists(), 'stale sidecar left')
    others = {p: s for p, s in statuses(recs).items() if p != 'hf/st_model'}
    j.check(set(others.values()) == {('skipped', 'up to date')}, f'others {others}')


@case
def batch_formats_verbose_names_shards_passed_over(ctx):
    """-v: each shard a glob would take is told as passed over, being in its shard folder."""
    j = J()
    zoo, _ = make_zoo(ctx)
    r = run_batch(ctx, zoo, 'pt', '-v')
    for name in ('hf/bin_model/pytorch_model-00001-of-00002.bin',
                 'hf/st_model/model-00003-of-00003.safetensors'):
        line = (f'skipped {zoo / name}: in the HF shard folder {zoo / os.path.dirname(name)} '
                f'(converted as one input)')
        j.check(line in r.stderr, f'no line {line!r} in {r.stderr[-1500:]}')


@case
def batch_formats_pth_and_safetensors_of_one_name_collide(ctx):
    """m.pth and m.safetensors in one folder would both be written to m.pth: usage error
    (exit 2) naming both, nothing written."""
    import torch
    j = J()
    zoo = ctx.work / 'zoo'
    zoo.mkdir()
    torch.save(state_dict(1), zoo / 'm.pth')
    st.write_safetensors(zoo / 'm.safetensors', state_dict(2))
    r = cb.batch(ctx, zoo, '-o', ctx.out_dir)
    j.check(r.rc == 2, f'exit code {r.rc}, expected 2')
    j.check(f'{zoo / "m.pth"} and {zoo / "m.safetensors"} would both be written to m.pth' in r.stderr,
            f'stderr {r.stderr!r}')
    j.check(not ctx.out_dir.exists() or not j.listdir(ctx.out_dir), 'something was written')


@case
def batch_formats_dtype_recorded_and_its_change_reconverts(ctx):
    """--dtype bf16: every record says dtype bfloat16 and the outputs hold the inputs cast as
    .to(torch.bfloat16) does (the int64 counter kept); the same batch without --dtype is not
    up to date ('options changed') and writes float32 again."""
    import torch
    j = J()
    zoo, sds = make_zoo(ctx)
    run_batch(ctx, zoo, 'pt', '--dtype', 'bf16')
    recs = records(ctx)
    cast = {rel: {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in sd.items()}
            for rel, sd in sds.items()}
    for rel, out in zip(INPUTS, NAMES['pt']):
        j.check(recs[out]['dtype'] == 'bfloat16', f'{out}: dtype {recs[out]["dtype"]!r}')
        check_equal(ctx.out_dir / out, cast[rel])
    run_batch(ctx, zoo, 'pt')
    recs = check_zoo(ctx, sds, 'pt')
    j.check(set(statuses(recs).values()) == {('converted', 'options changed')}, f'{statuses(recs)}')


@case
def batch_formats_dry_run_keeps_a_failed_folders_output(ctx):
    """--dry-run over a shard folder whose shard was truncated since: failed, its folder
    output only announced (stale_output 'would be removed'), every file of it still there."""
    j = J()
    zoo, sds = make_zoo(ctx)
    run_batch(ctx, zoo, 'shards')
    out = ctx.out_dir / 'hf/st_model'
    before = j.listdir(out)
    shard = zoo / 'hf/st_model/model-00002-of-00003.safetensors'
    shard.write_bytes(shard.read_bytes()[:40])
    r = cb.batch(ctx, zoo, '-o', ctx.out_dir, *ARGS['shards'], '--dry-run', '--json')
    j.check(r.rc == 5, f'exit code {r.rc}, expected 5')
    recs = cb.by_path([json.loads(line) for line in r.stdout.splitlines()])
    for rec in recs.values():
        j.check_schema(rec, 'batch.schema.json')
    rec = recs['hf/st_model']
    j.check(rec['status'] == 'failed' and rec['stale_output'] == 'would be removed', f'record {rec}')
    j.check(j.listdir(out) == before, f'{out}: {j.listdir(out)}, was {before}')
    others = {p: s for p, s in statuses(recs).items() if p != 'hf/st_model'}
    j.check(set(others.values()) == {('skipped', 'up to date')}, f'others {others}')


@case
def batch_formats_glob_takes_shard_folders_by_their_files(ctx):
    """--glob '*.bin': the .bin shard folder is taken (as one input), the safetensors one and
    the files are not (-v says why); --glob '*.pth' takes the .pth alone."""
    j = J()
    zoo, sds = make_zoo(ctx)
    r = run_batch(ctx, zoo, 'pt', '--glob', '*.bin', '-v')
    recs = records(ctx)
    j.check(sorted(recs) == ['hf/bin_model.pth'], f'report paths {sorted(recs)}')
    check_equal(ctx.out_dir / 'hf/bin_model.pth', sds['hf/bin_model'])
    line = f'skipped {zoo / "hf/st_model"}: an HF shard folder whose files match none of *.bin'
    j.check(line in r.stderr, f'no line {line!r} in {r.stderr[-1500:]}')
    run_batch(ctx, zoo, 'pt', '--glob', '*.pth')
    j.check(sorted(records(ctx)) == ['vision/a.pth'], f'report paths {sorted(records(ctx))}')
