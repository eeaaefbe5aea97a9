"""Issue 14's benchmark rows: consolidating sharded training checkpoints.

A ZeRO-2 run, a ZeRO-3 run and a DCP checkpoint of PARAMS fp32 parameters on 2 ranks
(tools/make_sharded_fixtures.py --bench: Adam moments beside the masters, twice their
size), each converted to one .pth, side by side with cp of a file of the output's size,
with the peak anonymous memory of every run. The Python tools (DeepSpeed's
zero_to_fp32.py, torch's dcp_to_torch_save) need DeepSpeed and torch >= 2.3, which this
machine lacks: their rows are not measured here (docs/performance.md says what they load).
"""
import shutil
import subprocess
import sys
from pathlib import Path

SHARDED = 'sharded training checkpoints'
KINDS = ('zero2', 'zero3', 'dcp')
ROOT = Path(__file__).resolve().parents[2]


def generate(workdir, params):
    """{kind: run folder} of the three --bench inputs, written once per PARAMS."""
    made = {}
    for kind in KINDS:
        folder = workdir / f'sharded-{kind}-{params}'
        done = folder / '.complete'
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            subprocess.run(['/usr/bin/python3', str(ROOT / 'tools/make_sharded_fixtures.py'),
                            '--bench', kind, '--params', str(params), '--out', str(folder)],
                           check=True, stdout=subprocess.DEVNULL)
            done.touch()
        runs = [p for p in folder.iterdir() if p.is_dir()]
        if len(runs) != 1:
            sys.exit(f'bench: {folder} should hold one run folder, holds {len(runs)}')
        made[kind] = runs[0]
    return made


def folder_bytes(folder):
    return sum(f.stat().st_size for f in folder.rglob('*') if f.is_file())


def bench_sharded(args, workdir, measure, run, params=100_000_000):
    """Times cp and ckpt-convert (with and without verification) on each kind, one table;
    judges issue 14's targets: peak anonymous memory under 128 MB and at most 1.5x cp."""
    made = generate(workdir, params)
    out = workdir / 'sharded-out.pth'
    copy_src = workdir / 'sharded-cp-source.pth'
    # cp's input: a file of the output's size (the consolidated masters), made by one
    # untimed conversion.
    run([args.bin, '-q', '--no-verify', '--force', str(made['zero2']), str(copy_src)])
    commands = {'cp (file of the output\'s size)': ['cp', str(copy_src), str(out)]}
    for kind, folder in made.items():
        # A DCP checkpoint holds the optimizer too (1.2 GB whole); --extract writes the
        # model's state dict, the 400 MB the ZeRO runs write and cp copies.
        extra = ['--extract'] if kind == 'dcp' else []
        name = ' '.join([kind, *extra])
        commands[f'{name} --no-verify'] = [args.bin, '-q', '--no-verify', '--force', *extra,
                                           str(folder), str(out)]
        commands[f'{name} (verify on cpu)'] = [args.bin, '-q', '--force', *extra,
                                               str(folder), str(out)]
    stats = measure(commands, args.runs, clean=lambda: out.unlink(missing_ok=True))
    out.unlink(missing_ok=True)
    cp = stats['cp (file of the output\'s size)'].wall
    print(f'\n### {SHARDED}: {params / 1e6:.0f}M fp32 parameters on 2 ranks, output '
          f'{copy_src.stat().st_size / 1e6:,.0f} MB, median of {args.runs} runs\n')
    print('| command | input MB | median s | × cp | CPU s | peak RSS MB | peak anon MB |')
    print('| --- | ---: | ---: | ---: | ---: | ---: | ---: |')
    for label, cmd in commands.items():
        kind = label.split()[0]
        size = folder_bytes(made[kind]) / 1e6 if kind in made else copy_src.stat().st_size / 1e6
        s = stats[label]
        print(f'| {label} | {size:,.0f} | {s.wall:.3f} | {s.wall / cp:.2f} | {s.cpu:.2f} | '
              f'{s.rss:.0f} | {s.anon:.0f} |')
    print('\nTargets (issue 14):\n')
    for label in commands:
        if label.startswith('cp'):
            continue
        ratio = stats[label].wall / cp
        anon = stats[label].anon
        print(f'- {label}: {ratio:.2f}x cp (target 1.5x: {"met" if ratio <= 1.5 else "**missed**"}), '
              f'peak anon {anon:.0f} MB (target < 128: {"met" if anon < 128 else "**missed**"})')
    copy_src.unlink(missing_ok=True)
    sys.stdout.flush()
