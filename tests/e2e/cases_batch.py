"""ckpt-convert e2e cases for `batch`: a model zoo converted into a mirrored tree.

Registered in the registry of cases.py (cases.py imports this module). Every case builds its
zoo at test time, in its work dir, from the small fixtures (copies in nested folders) and
from seeded DataParallel TinyCNNs saved by torch (variants), so no zoo is checked in.

The CLI contract judged here:
- `batch SRC... -o OUTDIR`: folders are walked for *.pth *.pth.tar *.pt *.bin *.ckpt (`--glob`
  replaces them; -v prints `skipped PATH: <reason>` for each entry passed over); a file goes to OUTDIR/<path under its SRC folder>; `@manifest` lists paths
  (relative ones keep their place under OUTDIR).
- every output is what `ckpt-convert IN OUT` with the same options writes, byte for byte,
  whatever `--jobs`; its sidecar is OUTDIR/.ckpt-convert/<path>.json, none beside it (one
  found there, as earlier versions wrote it, is read and moved).
- a second run skips every input (status `skipped`), `--force` redoes them; an input whose
  bytes changed is converted again, one only touched is not.
- report: OUTDIR/ckpt-convert-batch.jsonl (`.shard-I-of-N.jsonl` with --shard), one JSON
  object per input: schema, input, path, output, status, reason, exit_code, error,
  stale_output, input_bytes, output_bytes, output_format, dtype, shards, tensors, storages,
  storage_bytes, renamed, dropped, rules,
  verified_on, seconds.
- exit 0 when nothing failed, 5 when some input failed (each failure one
  `ckpt-convert: error: <input>: ...` line, the others converted), 2 usage, 4 device.
- an input whose conversion was tried and failed leaves no output: the output (and sidecar)
  of an earlier run is removed (`stale_output: "removed"`, a warning line), or with --dry-run
  only announced (`"would be removed"`).
- `--shard I/N`: shard of a path = splitmix64-finished FNV-1a-64 of its path under OUTDIR,
  mod N (shard_of below), so shards are disjoint, cover the list, and agree across machines.
"""
import json
import os
import re
import shutil
import sys
from pathlib import Path

sys.dont_write_bytecode = True     # keep __pycache__ out of the source tree
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


from judge import host_cases  # noqa: E402

cases = host_cases()
ERROR_PREFIX = 'ckpt-convert: error: '
REPORT = 'ckpt-convert-batch.jsonl'
RECORD_FIELDS = ['schema', 'input', 'path', 'output', 'status', 'reason', 'exit_code', 'error',
                 'stale_output', 'input_bytes', 'output_bytes', 'output_format', 'dtype', 'shards',
                 'tensors', 'storages', 'storage_bytes', 'renamed', 'dropped', 'rules', 'warnings',
                 'verified_on', 'seconds']

# fixtures copied into the zoo (each loads with weights_only=True on torch 1.13): zoo path
FIXTURE_COPIES = {
    'dp_tiny_cnn.pth': 'vision/cnn/dp_tiny_cnn.pth',
    'legacy_dp.pth': 'vision/cnn/legacy/legacy_dp.pt',
    'orig_mod_module.pth': 'vision/compiled/orig_mod_module.pth',
    'module_orig_mod.pth': 'vision/compiled/module_orig_mod.ckpt',
    'fsdp_style.pth': 'fsdp/fsdp_style.bin',
    'tied_weights.pth': 'nlp/lm/tied_weights.pth',
    'cuda3_tagged.pth': 'vision/gpu3/cuda3_tagged.pth',
    'dtypes.pth': 'misc/dtypes.pth',
    'views.pth': 'misc/deep/er/views.pt',
}
VARIANTS = 24
EXTENSIONS = ('.pth', '.pt', '.bin', '.ckpt')


def case(fn):
    if fn.__name__ in cases.CASES:
        raise SystemExit(f'cases_batch.py: case {fn.__name__} is already registered')
    return cases.case(fn)


def J():
    return cases.J()


def shard_of(path, count):
    """The documented shard of PATH (relative, '/'-separated) among COUNT."""
    mask = (1 << 64) - 1
    h = 0xcbf29ce484222325
    for c in path.encode():
        h = ((h ^ c) * 0x100000001b3) & mask
    h ^= h >> 30
    h = (h * 0xbf58476d1ce4e5b9) & mask
    h ^= h >> 27
    h = (h * 0x94d049bb133111eb) & mask
    h ^= h >> 31
    return h % count


def variant_path(i):
    return f'runs/family{i % 4}/run{i:02d}/epoch{i % 3}{EXTENSIONS[i % len(EXTENSIONS)]}'


def save_variant(path, seed):
    """A DataParallel TinyCNN state dict with weights from SEED."""
    import torch
    from torch import nn
    from models import TinyCNN
    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(nn.DataParallel(TinyCNN()).state_dict(), str(path))


def make_zoo(ctx, root=None, junk=True):
    """At least 30 checkpoints in nested folders under ROOT (default WORK/zoo), plus files
    the default globs must not take. Returns {relative path: fixture name or None}."""
    root = Path(root or ctx.work / 'zoo')
    zoo = {}
    for name, rel in FIXTURE_COPIES.items():
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ctx.fixture(name, copy=False), dst)
        zoo[rel] = name
    for i in range(VARIANTS):
        save_variant(root / variant_path(i), 1000 + i)
        zoo[variant_path(i)] = None
    if junk:
        (root / 'README.md').write_text('not a checkpoint\n')
        (root / 'runs' / 'family0' / 'notes.txt').write_text('x\n')
        shutil.copyfile(root / FIXTURE_COPIES['dp_tiny_cnn.pth'], root / 'vision/cnn/dp_tiny_cnn.pth.bak')
    assert len(zoo) >= 30
    return zoo


def summary_count(stderr, status):
    """The count of STATUS in the summary table on stderr, or None."""
    m = re.search(rf'^  {re.escape(status)} +(\d+) ', stderr, re.M)
    return int(m.group(1)) if m else None


def batch(ctx, *args, timeout=None):
    r = ctx.run('batch', *args, timeout=timeout)
    J().check_clean_exit(r)
    return r


def read_report(path):
    """The records of a JSON Lines report, each checked for the schema's fields."""
    j = J()
    j.check(Path(path).is_file(), f'no report at {path}')
    records = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        try:
            rec = json.loads(line)
        except ValueError as e:
            raise j.CaseFailure(f'{path}:{n}: not JSON: {e}') from None
        j.check(list(rec) == RECORD_FIELDS, f'{path}:{n}: fields {list(rec)}, expected {RECORD_FIELDS}')
        j.check(rec['schema'] == 'ckpt-convert.batch/2', f'{path}:{n}: schema {rec["schema"]!r}')
        j.check_schema(rec, 'batch.schema.json')
        j.check((rec['output'] is None) == (rec['status'] == 'failed'),
                f'{path}:{n}: output {rec["output"]!r} for status {rec["status"]}')
        records.append(rec)
    return records


def by_path(records):
    j = J()
    out = {r['path']: r for r in records}
    j.check(len(out) == len(records), 'the report has two records for one input')
    return out


def out_files(out_dir):
    """Every file under OUT_DIR (relative), sidecars and reports included."""
    files = set()
    for dirpath, _, names in os.walk(out_dir):
        for n in names:
            rel = os.path.relpath(os.path.join(dirpath, n), out_dir).replace(os.sep, '/')
            files.add(rel)
    return files


def sidecar_of(rel):
    """The sidecar of the output at REL under OUTDIR, relative to OUTDIR."""
    return '.ckpt-convert/' + rel + '.json'


def legacy_sidecar_of(rel):
    """Where versions before .ckpt-convert/ kept the sidecar of REL: beside the output."""
    return rel + '.ckpt-convert.json'


def check_mirror(out_dir, zoo, reports=(REPORT,)):
    """OUT_DIR holds exactly one output and one sidecar per zoo entry, and the reports."""
    j = J()
    expected = set(zoo) | {sidecar_of(p) for p in zoo} | set(reports)
    got = out_files(out_dir)
    j.check(got == expected, f'output tree differs from the zoo: missing {sorted(expected - got)[:5]}, '
                             f'extra {sorted(got - expected)[:5]}')


def judge_zoo_outputs(ctx, zoo_dir, out_dir, zoo):
    """Each output judged by PyTorch: a fixture copy as the single-file cases judge it, a
    variant loaded with weights_only=True and strictly into the plain TinyCNN, bitwise equal
    to its input under the unwrapped keys."""
    import torch
    from models import TinyCNN
    j = J()
    for rel, fixture in sorted(zoo.items()):
        inp, out = Path(zoo_dir) / rel, Path(out_dir) / rel
        if fixture is not None:
            cases.judge_output(ctx, fixture, inp, out)
            continue
        sd = j.load_weights_only(out)
        src = j.load(inp)
        j.check(list(sd) == [k[len('module.'):] for k in src], f'{rel}: keys {list(sd)[:3]}...')
        for k, v in sd.items():
            j.check(j.element_bytes(v) == j.element_bytes(src['module.' + k]), f'{rel}: {k} differs')
        TinyCNN().load_state_dict(sd, strict=True)


def sha_tree(out_dir, zoo):
    j = J()
    return {rel: j.sha256(Path(out_dir) / rel) for rel in zoo}


# ----------------------------------------------------------------------------- cases

@case
def batch_zoo_converts_all_with_jobs_2(ctx):
    j = J()
    zoo = make_zoo(ctx)
    out = ctx.work / 'out' / 'zoo'
    r = batch(ctx, ctx.work / 'zoo', '-o', out, '--jobs', '2')
    j.check(r.rc == 0, f'exit code {r.rc}, expected 0')
    j.check(ERROR_PREFIX not in r.stderr, 'exit 0 but an error line on stderr')
    j.check(summary_count(r.stderr, 'converted') == len(zoo), f'the summary does not say {len(zoo)} converted')
    check_mirror(out, zoo)
    records = by_path(read_report(out / REPORT))
    j.check(set(records) == set(zoo), f'report inputs differ: {sorted(set(records) ^ set(zoo))[:5]}')
    for rel, rec in records.items():
        j.check(rec['status'] == 'converted' and rec['reason'] == 'new' and rec['exit_code'] == 0
                and rec['error'] is None, f'{rel}: {rec["status"]} {rec["reason"]} {rec["error"]}')
        j.check(rec['output'] == str(out / rel), f'{rel}: output {rec["output"]}')
        j.check(rec['input_bytes'] == (ctx.work / 'zoo' / rel).stat().st_size, f'{rel}: input_bytes')
        j.check(rec['output_bytes'] == (out / rel).stat().st_size, f'{rel}: output_bytes')
        j.check(rec['tensors'] > 0 and rec['verified_on'] == 'cpu', f'{rel}: tensors/verified_on')
        j.check([x['rule'] for x in rec['rules']][0].startswith('strip-repeated module.'),
                f'{rel}: rules {rec["rules"]}')
    j.check(records[variant_path(0)]['renamed'] == 9 and
            records[variant_path(0)]['rules'][0]['matches'] == 9, 'a variant has 9 keys renamed')
    judge_zoo_outputs(ctx, ctx.work / 'zoo', out, zoo)


@case
def batch_second_run_skips_all(ctx):
    j = J()
    zoo = make_zoo(ctx)
    out = ctx.work / 'out' / 'zoo'
    r = batch(ctx, ctx.work / 'zoo', '-o', out, '--jobs', '2')
    j.check(r.rc == 0, f'first run: exit code {r.rc}')
    before = {rel: ((out / rel).stat().st_mtime_ns, j.sha256(out / rel)) for rel in zoo}
    r = batch(ctx, ctx.work / 'zoo', '-o', out, '--jobs', '2')
    j.check(r.rc == 0, f'second run: exit code {r.rc}, expected 0')
    records = by_path(read_report(out / REPORT))
    j.check(set(records) == set(zoo), 'second report does not list every input')
    for rel, rec in records.items():
        j.check(rec['status'] == 'skipped' and rec['reason'] == 'up to date',
                f'{rel}: {rec["status"]} ({rec["reason"]}) on the second run')
        j.check(rec['tensors'] > 0 and rec['output_bytes'] > 0, f'{rel}: a skipped record keeps the results')
    after = {rel: ((out / rel).stat().st_mtime_ns, j.sha256(out / rel)) for rel in zoo}
    j.check(before == after, 'the second run touched outputs')
    j.check(summary_count(r.stderr, 'skipped') == len(zoo), 'the summary does not say all skipped')
    r = batch(ctx, ctx.work / 'zoo', '-o', out, '--force')
    j.check(r.rc == 0, f'--force: exit code {r.rc}')
    j.check(all(rec['status'] == 'converted' and rec['reason'] == 'forced (--force)'
                for rec in read_report(out / REPORT)), '--force did not convert everything again')
    j.check({rel: j.sha256(out / rel) for rel in zoo} == {rel: v[1] for rel, v in before.items()},
            '--force wrote other bytes')


@case
def batch_changed_inputs_converted_again(ctx):
    """Only a changed input is redone: touched (same bytes) is skipped; new bytes, a removed
    output, other options are converted again."""
    j = J()
    zoo = make_zoo(ctx, junk=False)
    zoo_dir, out = ctx.work / 'zoo', ctx.work / 'out' / 'zoo'
    j.check(batch(ctx, zoo_dir, '-o', out).rc == 0, 'first run failed')
    touched, rewritten, removed = variant_path(0), variant_path(1), variant_path(2)
    os.utime(zoo_dir / touched)
    st = (zoo_dir / touched).stat()
    os.utime(zoo_dir / touched, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    save_variant(zoo_dir / rewritten, 77)
    (out / removed).unlink()
    r = batch(ctx, zoo_dir, '-o', out)
    j.check(r.rc == 0, f'exit code {r.rc}')
    recs = by_path(read_report(out / REPORT))
    want = {touched: ('skipped', 'up to date'), rewritten: ('converted', 'input changed'),
            removed: ('converted', 'new')}
    for rel, rec in recs.items():
        got = (rec['status'], rec['reason'])
        j.check(got == want.get(rel, ('skipped', 'up to date')), f'{rel}: {got}')
    single = ctx.work / 'single.pth'
    r = ctx.run(zoo_dir / rewritten, single)
    j.check(r.rc == 0, 'single conversion failed')
    j.check(j.sha256(single) == j.sha256(out / rewritten), 'the redone output differs from ckpt-convert IN OUT')
    r = batch(ctx, zoo_dir, '-o', out, '--location', 'keep')
    j.check(r.rc == 0, f'--location keep: exit code {r.rc}')
    j.check(all((x['status'], x['reason']) == ('converted', 'options changed') for x in read_report(out / REPORT)),
            'other options did not redo every input')


@case
def batch_corrupt_input_reported_others_converted(ctx):
    j = J()
    zoo = make_zoo(ctx, junk=False)
    zoo_dir, out = ctx.work / 'zoo', ctx.work / 'out' / 'zoo'
    bad = {'runs/family1/broken/truncated.pth', 'vision/cnn/garbage.pt'}
    src = (zoo_dir / variant_path(5)).read_bytes()
    (zoo_dir / 'runs/family1/broken').mkdir(parents=True)
    (zoo_dir / 'runs/family1/broken/truncated.pth').write_bytes(src[:len(src) // 2])
    (zoo_dir / 'vision/cnn/garbage.pt').write_bytes(b'not a checkpoint at all\n' * 10)
    r = batch(ctx, zoo_dir, '-o', out, '--jobs', '2')
    j.check(r.rc == 5, f'exit code {r.rc}, expected 5 (some inputs failed)')
    errors = [line for line in r.stderr.splitlines() if line.startswith(ERROR_PREFIX)]
    j.check(len(errors) == 2, f'{len(errors)} error lines, expected one per bad input')
    for rel in bad:
        j.check(any(line.startswith(f'{ERROR_PREFIX}{zoo_dir / rel}: ') for line in errors),
                f'no error line names {rel}')
        j.check(not (out / rel).exists(), f'an output was written for the bad input {rel}')
    recs = by_path(read_report(out / REPORT))
    j.check(set(recs) == set(zoo) | bad, 'the report does not list every input')
    for rel, rec in recs.items():
        if rel in bad:
            j.check(rec['status'] == 'failed' and rec['exit_code'] == 1 and
                    rec['error'].startswith(str(zoo_dir / rel) + ': '), f'{rel}: {rec}')
        else:
            j.check(rec['status'] == 'converted', f'{rel}: {rec["status"]} beside a bad input')
    check_mirror(out, zoo)      # no output, sidecar or temporary file for the bad ones
    j.check(summary_count(r.stderr, 'failed') == 2, 'the summary table does not count 2 failed')
    judge_zoo_outputs(ctx, zoo_dir, out, {rel: zoo[rel] for rel in list(zoo)[:3] + [variant_path(5)]})


@case
def batch_shards_disjoint_and_cover(ctx):
    j = J()
    zoo = make_zoo(ctx, junk=False)
    zoo_dir, out = ctx.work / 'zoo', ctx.work / 'out' / 'zoo'
    n = 3
    seen = {}
    for i in range(n):
        r = batch(ctx, zoo_dir, '-o', out, '--shard', f'{i}/{n}')
        j.check(r.rc == 0, f'shard {i}/{n}: exit code {r.rc}')
        j.check(f'in this shard, of {len(zoo)} listed' in r.stderr, f'shard {i}: summary does not say the share')
        recs = read_report(out / f'ckpt-convert-batch.shard-{i}-of-{n}.jsonl')
        j.check(recs, f'shard {i}/{n} is empty (the hash spreads {len(zoo)} inputs badly)')
        for rec in recs:
            j.check(rec['path'] not in seen, f'{rec["path"]} is in shards {seen.get(rec["path"])} and {i}')
            j.check(shard_of(rec['path'], n) == i, f'{rec["path"]} is in shard {i}, the hash says '
                                                   f'{shard_of(rec["path"], n)}')
            seen[rec['path']] = i
    j.check(set(seen) == set(zoo), f'shards do not cover the list: missing {sorted(set(zoo) - set(seen))[:5]}')
    check_mirror(out, zoo, reports=[f'ckpt-convert-batch.shard-{i}-of-{n}.jsonl' for i in range(n)])
    whole = ctx.work / 'out' / 'whole'
    j.check(batch(ctx, zoo_dir, '-o', whole).rc == 0, 'unsharded run failed')
    j.check(sha_tree(out, zoo) == sha_tree(whole, zoo), 'sharded outputs differ from an unsharded run')


@case
def batch_two_runs_identical_bytes(ctx):
    j = J()
    zoo = make_zoo(ctx, junk=False)
    zoo_dir = ctx.work / 'zoo'
    a, b = ctx.work / 'out' / 'a', ctx.work / 'out' / 'b'
    j.check(batch(ctx, zoo_dir, '-o', a, '--jobs', '2').rc == 0, 'first run failed')
    j.check(batch(ctx, zoo_dir, '-o', b, '--jobs', '1', '--max-memory', '1').rc == 0, 'second run failed')
    ha, hb = sha_tree(a, zoo), sha_tree(b, zoo)
    differ = sorted(rel for rel in zoo if ha[rel] != hb[rel])
    j.check(not differ, f'outputs differ between two runs: {differ[:5]}')
    for rel in (variant_path(3), FIXTURE_COPIES['legacy_dp.pth'], FIXTURE_COPIES['views.pth']):
        single = ctx.work / 'single' / Path(rel).name
        single.parent.mkdir(exist_ok=True)
        j.check(ctx.run(zoo_dir / rel, single).rc == 0, f'ckpt-convert {rel} failed')
        j.check(j.sha256(single) == ha[rel], f'{rel}: batch output differs from ckpt-convert IN OUT')


@case
def batch_manifest_and_glob(ctx):
    j = J()
    zoo = make_zoo(ctx, junk=False)
    zoo_dir = ctx.work / 'zoo'
    manifest = zoo_dir / 'manifest.txt'
    picked = [variant_path(0), 'vision/compiled', '# a comment', '', 'nope/missing.pth']
    manifest.write_text('\n'.join(picked) + '\n')
    out = ctx.work / 'out' / 'm'
    r = batch(ctx, '@' + str(manifest), '-o', out)
    j.check(r.rc == 5, f'exit code {r.rc}, expected 5 (the missing entry fails, the others are done)')
    recs = by_path(read_report(out / REPORT))
    want = {variant_path(0), 'vision/compiled/orig_mod_module.pth', 'vision/compiled/module_orig_mod.ckpt',
            'nope/missing.pth'}
    j.check(set(recs) == want, f'manifest inputs {sorted(recs)}, expected {sorted(want)}')
    j.check(recs['nope/missing.pth']['status'] == 'failed' and
            'No such file' in recs['nope/missing.pth']['error'], 'missing manifest entry not failed')
    out2 = ctx.work / 'out' / 'g'
    r = batch(ctx, zoo_dir, '-o', out2, '--glob', '*.ckpt', '--glob', 'fsdp/*')
    j.check(r.rc == 0, f'--glob: exit code {r.rc}')
    want = {rel for rel in zoo if rel.endswith('.ckpt') or rel.startswith('fsdp/')}
    j.check(set(by_path(read_report(out2 / REPORT))) == want, '--glob picked other files')


@case
def batch_options_apply_to_every_input(ctx):
    """--extract and rules reach every file; --json prints the same records on stdout."""
    import torch
    from torch import nn
    from models import TinyCNN
    j = J()
    zoo_dir = ctx.work / 'zoo'
    for i in range(3):
        torch.manual_seed(i)
        (zoo_dir / f'e{i}').mkdir(parents=True)
        torch.save({'epoch': i, 'state_dict': nn.DataParallel(TinyCNN()).state_dict()},
                   str(zoo_dir / f'e{i}' / 'ckpt.pth'))
    out = ctx.work / 'out' / 'x'
    r = batch(ctx, zoo_dir, '-o', out, '--extract', '--add-prefix', 'net.', '--json')
    j.check(r.rc == 0, f'exit code {r.rc}')
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    j.check(sorted(x['path'] for x in lines) == sorted(x['path'] for x in read_report(out / REPORT)),
            '--json lines differ from the report')
    for i in range(3):
        sd = j.load_weights_only(out / f'e{i}' / 'ckpt.pth')
        j.check(j.is_state_dict(sd) and all(k.startswith('net.') and 'module.' not in k for k in sd),
                f'e{i}: not a bare state dict with net. keys: {list(sd)[:3]}')
        rules = [x for x in lines if x['path'] == f'e{i}/ckpt.pth'][0]['rules']
        j.check(rules[-1] == {'rule': 'add-prefix net.', 'origin': '--add-prefix', 'matches': 9},
                f'e{i}: rules {rules}')


@case
def batch_usage_errors_stop_before_work(ctx):
    j = J()
    zoo_dir = ctx.work / 'zoo'
    save_variant(zoo_dir / 'a' / 'm.pth', 1)
    save_variant(zoo_dir / 'b' / 'm.pth', 2)
    out = ctx.work / 'out' / 'u'
    for args, rc, words in [
        ((zoo_dir / 'a', '-o', out, '--shard', '3/3'), 2, ('--shard', 'I must be 0 to 2')),
        ((zoo_dir / 'a', '-o', out, '--max-memory', 'lots'), 2, ('--max-memory',)),
        ((zoo_dir / 'a', zoo_dir / 'b'), 2, ('-o',)),
        ((zoo_dir / 'a', zoo_dir / 'b', '-o', out), 2, ('would both be written to m.pth',)),
        ((zoo_dir / 'nope', '-o', out), 1, ('nope', 'No such file')),
        ((zoo_dir / 'a', '-o', out, '--device', 'cuda:99'), 4, ('cuda:99',)),
        ((zoo_dir / 'a', '-o', zoo_dir / 'a'), 2, ('output folder',)),
    ]:
        r = batch(ctx, *args)
        j.check(r.rc == rc, f'batch {" ".join(map(str, args))}: exit code {r.rc}, expected {rc}')
        j.check_one_error_line(r, must_contain=words)
        j.check(not out.exists(), f'batch {" ".join(map(str, args))}: created the output folder')


def save_training(path, seed):
    """A training checkpoint: {'epoch', 'state_dict': a DataParallel TinyCNN state dict}."""
    import torch
    from torch import nn
    from models import TinyCNN
    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({'epoch': 3, 'state_dict': nn.DataParallel(TinyCNN()).state_dict()}, str(path))


def zoo_that_fails_with_extract_key(ctx):
    """WORK/zoo with a training checkpoint (train/t.pth) and a bare state dict (bare/b.pth),
    converted once into WORK/out/zoo with no options: the bare one then fails with
    --extract=state_dict, the other converts."""
    j = J()
    zoo_dir, out = ctx.work / 'zoo', ctx.work / 'out' / 'zoo'
    save_training(zoo_dir / 'train' / 't.pth', 5)
    save_variant(zoo_dir / 'bare' / 'b.pth', 6)
    r = batch(ctx, zoo_dir, '-o', out)
    j.check(r.rc == 0, f'first run: exit code {r.rc}')
    j.check((out / 'bare' / 'b.pth').is_file(), 'first run: no output for bare/b.pth')
    return zoo_dir, out


@case
def batch_rerun_failure_removes_stale_output(ctx):
    """An input that fails with the options of a rerun keeps no output (nor sidecar) of the
    earlier options: its record and a warning say the stale output was removed."""
    j = J()
    zoo_dir, out = zoo_that_fails_with_extract_key(ctx)
    r = batch(ctx, zoo_dir, '-o', out, '--extract=state_dict')
    j.check(r.rc == 5, f'rerun: exit code {r.rc}, expected 5 (bare/b.pth fails)')
    errors = [line for line in r.stderr.splitlines() if line.startswith(ERROR_PREFIX)]
    j.check(len(errors) == 1 and errors[0].startswith(f'{ERROR_PREFIX}{zoo_dir / "bare" / "b.pth"}:b/data.pkl: no top-level key'),
            f'error lines {errors}')
    j.check(not (out / 'bare' / 'b.pth').exists(), 'the output of the earlier options is still there')
    recs = by_path(read_report(out / REPORT))
    j.check((recs['train/t.pth']['status'], recs['train/t.pth']['reason']) == ('converted', 'options changed'),
            f'train/t.pth: {recs["train/t.pth"]["status"]} {recs["train/t.pth"]["reason"]}')
    bad = recs['bare/b.pth']
    j.check((bad['status'], bad['stale_output'], bad['output_bytes']) == ('failed', 'removed', 0),
            f'bare/b.pth: {bad["status"]}, stale output {bad["stale_output"]!r}, {bad["output_bytes"]} bytes')
    j.check(recs['train/t.pth']['stale_output'] is None, 'train/t.pth: a stale output for a converted input')
    warning = f'ckpt-convert: warning: {out / "bare" / "b.pth"}: removed the output of an earlier run'
    j.check(warning in r.stderr.splitlines(), f'no line {warning!r} on stderr')
    j.check(out_files(out) == {'train/t.pth', sidecar_of('train/t.pth'), REPORT},
            f'output tree {sorted(out_files(out))}')
    j.check(j.is_state_dict(j.load_weights_only(out / 'train' / 't.pth')), 'train/t.pth: not extracted')


@case
def batch_dry_run_failure_keeps_stale_output(ctx):
    """--dry-run removes nothing: it says that the stale output would be removed."""
    j = J()
    zoo_dir, out = zoo_that_fails_with_extract_key(ctx)
    before = {rel: j.sha256(out / rel) for rel in out_files(out)}
    r = batch(ctx, zoo_dir, '-o', out, '--extract=state_dict', '--dry-run', '--json')
    j.check(r.rc == 5, f'dry run: exit code {r.rc}, expected 5 (bare/b.pth fails)')
    j.check({rel: j.sha256(out / rel) for rel in out_files(out)} == before, 'the dry run changed the output tree')
    recs = by_path([json.loads(line) for line in r.stdout.splitlines()])
    bad = recs['bare/b.pth']
    j.check((bad['status'], bad['stale_output']) == ('failed', 'would be removed'),
            f'bare/b.pth: {bad["status"]}, stale output {bad["stale_output"]!r}')
    line = f'ckpt-convert: warning: {out / "bare" / "b.pth"}: would remove the output of an earlier run (--dry-run)'
    j.check(line in r.stderr.splitlines(), f'no line {line!r} on stderr')
    j.check(recs['train/t.pth']['status'] == 'dry-run', f'train/t.pth: {recs["train/t.pth"]["status"]}')


@case
def batch_finds_pth_tar_by_default(ctx):
    """pytorch/examples names its checkpoints checkpoint.pth.tar and model_best.pth.tar: the
    default patterns take them, and each output keeps its input's name."""
    import torch
    from models import TinyCNN
    j = J()
    zoo_dir, out = ctx.work / 'zoo', ctx.work / 'out' / 'zoo'
    taken = ['resnet/checkpoint.pth.tar', 'resnet/model_best.pth.tar', 'plain.pth']
    for n, rel in enumerate(taken):
        save_training(zoo_dir / rel, 20 + n)
    (zoo_dir / 'resnet' / 'logs.tar').write_bytes(b'not taken\n')
    shutil.copyfile(zoo_dir / taken[0], zoo_dir / 'resnet' / 'checkpoint.pth.tar.bak')
    r = batch(ctx, zoo_dir, '-o', out, '--extract')
    j.check(r.rc == 0, f'exit code {r.rc}, expected 0')
    recs = by_path(read_report(out / REPORT))
    j.check(sorted(recs) == sorted(taken), f'inputs {sorted(recs)}, expected {sorted(taken)}')
    j.check(all(rec['status'] == 'converted' and rec['output'] == str(out / rel) for rel, rec in recs.items()),
            f'records {[(rel, rec["status"], rec["output"]) for rel, rec in recs.items()]}')
    for rel in taken:
        sd = j.load_weights_only(out / rel)
        src = j.load(zoo_dir / rel)['state_dict']
        j.check(list(sd) == [k[len('module.'):] for k in src], f'{rel}: keys {list(sd)[:3]}...')
        for k, v in sd.items():
            j.check(j.element_bytes(v) == j.element_bytes(src['module.' + k]), f'{rel}: {k} differs')
        TinyCNN().load_state_dict(sd, strict=True)
    j.check(not (out / 'resnet' / 'logs.tar').exists() and not (out / 'resnet' / 'checkpoint.pth.tar.bak').exists(),
            'a file no default pattern matches was converted')


@case
def batch_verbose_lists_skipped_files_with_reasons(ctx):
    """-v: one line `skipped PATH: <reason>` per entry the walk passed over, nothing for the
    inputs it took; without -v, none."""
    j = J()
    zoo_dir = ctx.work / 'zoo'
    out = zoo_dir / 'clean'                 # OUTDIR inside the zoo: never entered
    save_variant(zoo_dir / 'a' / 'm.pth', 1)
    save_variant(out / 'old.pth', 2)
    save_variant(zoo_dir / 'other' / '.ckpt-convert' / 'a' / 'm.pth', 3)
    (zoo_dir / 'README.md').write_text('not a checkpoint\n')
    (zoo_dir / 'latest').symlink_to(zoo_dir / 'a', target_is_directory=True)
    (zoo_dir / 'gone.pth').symlink_to(zoo_dir / 'nowhere.pth')
    os.mkfifo(zoo_dir / 'pipe.pt')
    r = batch(ctx, zoo_dir, '-o', out, '-v')
    j.check(r.rc == 0, f'exit code {r.rc}, expected 0')
    none = 'matches none of *.pth *.pth.tar *.pt *.bin *.ckpt *.safetensors'
    want = {str(zoo_dir / 'README.md'): none,
            str(out): 'the output folder',
            str(zoo_dir / 'other' / '.ckpt-convert'): 'the sidecars of an output folder',
            str(zoo_dir / 'latest'): 'a symlink to a folder (not followed)',
            str(zoo_dir / 'gone.pth'): 'a dangling symlink',
            str(zoo_dir / 'pipe.pt'): 'not a regular file'}
    got = {}
    for line in r.stderr.splitlines():
        m = re.fullmatch(r'ckpt-convert: info: skipped (.+?): (.+)', line)
        if m:
            j.check(m.group(1) not in got, f'{m.group(1)} listed twice')
            got[m.group(1)] = m.group(2)
    j.check(got == want, f'skipped lines {got}, expected {want}')
    j.check(f'ckpt-convert: info: converted {zoo_dir / "a" / "m.pth"} (new, ' in r.stderr,
            'no converted line for a/m.pth')
    j.check([rec['path'] for rec in read_report(out / REPORT)] == ['a/m.pth'], 'inputs other than a/m.pth')
    r = batch(ctx, zoo_dir, '-o', out)
    j.check(r.rc == 0 and 'skipped ' + str(zoo_dir / 'README.md') not in r.stderr,
            f'without -v: exit code {r.rc}, or a skipped line')


@case
def batch_sidecars_under_records_folder_none_beside_outputs(ctx):
    """Sidecars mirror the tree under OUTDIR/.ckpt-convert/: a loader that takes every file of an
    output folder meets only checkpoints; a second run still finds them all up to date."""
    j = J()
    zoo = make_zoo(ctx, junk=False)
    zoo_dir, out = ctx.work / 'zoo', ctx.work / 'out' / 'zoo'
    j.check(batch(ctx, zoo_dir, '-o', out).rc == 0, 'first run failed')
    check_mirror(out, zoo)
    for rel in zoo:
        side = json.loads((out / sidecar_of(rel)).read_text())
        j.check(side['schema'] == 'ckpt-convert.sidecar/1' and side['record']['path'] == rel,
                f'{sidecar_of(rel)}: {side.get("schema")} for {side.get("record", {}).get("path")}')
    for folder in {str(Path(rel).parent) for rel in zoo}:
        names = {p.name for p in (out / folder).iterdir() if p.is_file()}
        want = {Path(rel).name for rel in zoo if str(Path(rel).parent) == folder}
        if folder == '.':
            want.add(REPORT)
        j.check(names == want, f'{folder}: files {sorted(names)}, expected only the outputs {sorted(want)}')
    r = batch(ctx, zoo_dir, '-o', out)
    j.check(r.rc == 0 and summary_count(r.stderr, 'skipped') == len(zoo),
            f'second run: exit code {r.rc}, not all {len(zoo)} skipped')


@case
def batch_old_sidecars_migrated_and_still_up_to_date(ctx):
    """A tree whose sidecars sit beside the outputs (as earlier versions wrote them) is up to date
    on a rerun: each sidecar is moved, unchanged, to .ckpt-convert/; a dry run moves nothing."""
    j = J()
    zoo = make_zoo(ctx, junk=False)
    zoo_dir, out = ctx.work / 'zoo', ctx.work / 'out' / 'zoo'
    j.check(batch(ctx, zoo_dir, '-o', out).rc == 0, 'first run failed')
    for rel in zoo:
        os.rename(out / sidecar_of(rel), out / legacy_sidecar_of(rel))
    shutil.rmtree(out / '.ckpt-convert')
    old_tree = {rel: j.sha256(out / rel) for rel in out_files(out)}
    old_sidecars = {rel: (out / legacy_sidecar_of(rel)).read_bytes() for rel in zoo}
    r = batch(ctx, zoo_dir, '-o', out, '--dry-run')
    j.check(r.rc == 0 and summary_count(r.stderr, 'skipped') == len(zoo),
            f'dry run: exit code {r.rc}, not all {len(zoo)} skipped')
    j.check({rel: j.sha256(out / rel) for rel in out_files(out)} == old_tree, 'the dry run changed the tree')
    outputs = {rel: ((out / rel).stat().st_mtime_ns, j.sha256(out / rel)) for rel in zoo}
    r = batch(ctx, zoo_dir, '-o', out)
    j.check(r.rc == 0, f'rerun: exit code {r.rc}')
    recs = by_path(read_report(out / REPORT))
    j.check(set(recs) == set(zoo) and all((x['status'], x['reason']) == ('skipped', 'up to date')
                                          for x in recs.values()),
            f'rerun: {sorted({(x["status"], x["reason"]) for x in recs.values()})}')
    check_mirror(out, zoo)      # every sidecar under .ckpt-convert/, none beside an output
    for rel in zoo:
        j.check((out / sidecar_of(rel)).read_bytes() == old_sidecars[rel], f'{rel}: the sidecar changed as it moved')
    j.check({rel: ((out / rel).stat().st_mtime_ns, j.sha256(out / rel)) for rel in zoo} == outputs,
            'the rerun touched outputs')
