"""ckpt-convert e2e cases for `batch` over training runs (issue 14 item 4, batch part).

Registered in the registry of cases.py (cases.py imports this module). The zoo is built at
test time from the sharded fixtures (tools/make_sharded_fixtures.py, under
LARGE_DATA/sharded): every DeepSpeed run folder and DCP folder that converts without options,
one failing run folder, and a plain torch.save file.

The contract judged here:
- each run folder is ONE input, whatever the globs say (its files are named `.pt`,
  `.distcp`, `latest`), and nothing inside it is taken on its own; its output is named as a
  shard folder's is (`zero/NAME/run` → `zero/NAME/run.pth`).
- each output is byte for byte what `ckpt-convert RUN out.pth` writes for that folder alone
  (whose correctness cases_zero.py and cases_dcp.py judge against torch), and loads.
- a failing run folder is a failed input (exit 5) with its file named; the others convert.
- resuming: a second run skips every input; a touched file of a run folder, or a file added
  to it, makes that folder alone converted again (run folders are stamped by size and mtime,
  not CRC-32: docs/batch.md says why).
"""
import os
import shutil
import sys
from pathlib import Path

sys.dont_write_bytecode = True     # keep __pycache__ out of the source tree
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from judge import host_cases  # noqa: E402
import cases_batch as cb  # noqa: E402
import sharded  # noqa: E402

cases = host_cases()
J = cb.J


def case(fn):
    if fn.__name__ in cases.CASES:
        raise SystemExit(f'cases_batch_runs.py: case {fn.__name__} is already registered')
    return cases.case(fn)


def make_zoo(ctx, failing=True):
    """WORK/zoo: the run folders that convert without options (and, with FAILING, the first
    negative one), each at FAMILY/NAME/run, and a plain file; returns (zoo, [run paths],
    failing run path or None)."""
    import torch
    zoo = ctx.work / 'zoo'
    runs, bad = [], None
    for rel, (folder, spec) in sharded.every_fixture(ctx).items():
        if spec.get('options'):
            continue
        if spec.get('error'):
            if failing and bad is None and 'global' not in spec['error']:
                bad = f'{rel}/run'
                shutil.copytree(folder / 'run', zoo / bad, symlinks=True)
            continue
        runs.append(f'{rel}/run')
        shutil.copytree(folder / 'run', zoo / runs[-1], symlinks=True)
    J().check(any(r.startswith('zero/') for r in runs) and any(r.startswith('dcp/') for r in runs),
              f'the zoo should hold DeepSpeed and DCP runs: {runs}')
    torch.save({'w': torch.arange(6.0)}, zoo / 'plain.pth')
    return zoo, runs, bad


def alone(ctx, run):
    """What `ckpt-convert RUN out.pth` writes for RUN by itself."""
    out = ctx.work / 'alone' / (run.replace('/', '_') + '.pth')
    out.parent.mkdir(exist_ok=True)
    r = ctx.run(ctx.work / 'zoo' / run, out, '--force')
    J().check(r.rc == 0, f'{run} alone: exit {r.rc}: {r.stderr}')
    return out.read_bytes()


def records(ctx):
    return cb.by_path(cb.read_report(ctx.out_dir / cb.REPORT))


def statuses(recs):
    return {path: (r['status'], r['reason']) for path, r in recs.items()}


@case
def batch_runs_each_run_folder_is_one_input(ctx):
    """Every run folder becomes one output, the same bytes as its conversion alone; the
    failing one is a failed input naming its file; nothing inside a run is taken alone."""
    import torch
    j = J()
    zoo, runs, bad = make_zoo(ctx)
    r = ctx.run('batch', zoo, '-o', ctx.out_dir, '--jobs', '2')
    j.check(r.rc == (5 if bad else 0), f'exit code {r.rc}')
    recs = records(ctx)
    want = sorted([run + '.pth' for run in runs] + ([bad + '.pth'] if bad else []) + ['plain.pth'])
    j.check(sorted(recs) == want, f'report paths {sorted(recs)}, expected {want}')
    for run in runs:
        rec = recs[run + '.pth']
        j.check(rec['status'] == 'converted', f'{run}: {rec["status"]} {rec["error"]}')
        j.check(rec['input'] == str(zoo / run), f'{run}: input {rec["input"]}')
        out = ctx.out_dir / (run + '.pth')
        j.check(out.read_bytes() == alone(ctx, run), f'{run}: batch output differs from its conversion alone')
        torch.load(out)
    if bad:
        rec = recs[bad + '.pth']
        j.check(rec['status'] == 'failed' and rec['exit_code'] == 1, f'{bad}: {rec}')
        j.check(str(zoo / bad) in (rec['error'] or ''), f'{bad}: error does not name the folder: {rec["error"]}')
        j.check(not (ctx.out_dir / (bad + '.pth')).exists(), f'{bad}: an output was written')


@case
def batch_runs_resume_by_size_and_mtime(ctx):
    """A second run skips every run; a touched file of one run, or a file added to another,
    reconverts that run alone, to the same bytes."""
    j = J()
    zoo, runs, _ = make_zoo(ctx, failing=False)
    ctx.run('batch', zoo, '-o', ctx.out_dir)
    ctx.run('batch', zoo, '-o', ctx.out_dir)
    recs = records(ctx)
    j.check(set(statuses(recs).values()) == {('skipped', 'up to date')}, f'second run: {statuses(recs)}')
    touched, grown = runs[0], runs[-1]
    before = (ctx.out_dir / (touched + '.pth')).read_bytes()
    some_file = sorted(p for p in (zoo / touched).rglob('*') if p.is_file())[0]
    st = some_file.stat()
    os.utime(some_file, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    (zoo / grown / 'notes.txt').write_text('a file added to the run folder\n')
    r = ctx.run('batch', zoo, '-o', ctx.out_dir)
    j.check(r.rc == 0, f'third run: exit {r.rc}: {r.stderr}')
    recs = records(ctx)
    for path, (status, reason) in statuses(recs).items():
        changed = path in (touched + '.pth', grown + '.pth')
        want = ('converted', 'input changed') if changed else ('skipped', 'up to date')
        j.check((status, reason) == want, f'{path}: {status} ({reason}), expected {want}')
    j.check((ctx.out_dir / (touched + '.pth')).read_bytes() == before,
            f'{touched}: reconverted to other bytes')
