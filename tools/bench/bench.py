#!/usr/bin/python3
"""The benchmark behind tools/bench.sh: generate, time alternately, report medians.

Every command of one benchmark runs once per round, in turn, so that a busy
machine slows them all alike; the table shows medians over the rounds, ratios
computed from those medians, and the highest peak RSS seen (/usr/bin/time -v).
"""
import argparse
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True
HERE = Path(__file__).resolve().parent


def generate(workdir):
    """The synthetic checkpoints, made once and reused by later runs."""
    import torch
    from collections import OrderedDict
    made = {}
    big = workdir / 'transformer_1.3g.pth'
    if not big.exists():
        torch.manual_seed(0)
        sd = OrderedDict()
        d, layers = 1024, 23
        sd['module.embed.weight'] = torch.randn(32000, d)
        for i in range(layers):
            p = f'module.layers.{i}.'
            for name in ('q', 'k', 'v', 'o'):
                sd[p + f'attn.{name}.weight'] = torch.randn(d, d)
                sd[p + f'attn.{name}.bias'] = torch.randn(d)
            sd[p + 'mlp.up.weight'] = torch.randn(4 * d, d)
            sd[p + 'mlp.down.weight'] = torch.randn(d, 4 * d)
            sd[p + 'norm1.weight'] = torch.ones(d)
            sd[p + 'norm2.weight'] = torch.ones(d)
        sd['module.head.weight'] = sd['module.embed.weight']  # tied, as LMs do
        torch.save(sd, big)
    made['1.3 GB transformer (DDP)'] = big
    small = workdir / 'small_50k.pth'
    if not small.exists():
        torch.manual_seed(0)
        sd = OrderedDict((f'module.blocks.{i // 10}.t{i % 10}', torch.randn(16)) for i in range(50000))
        torch.save(sd, small)
    made['50,000 small tensors (DDP)'] = small
    legacy = workdir / 'legacy_300m.pth'
    if not legacy.exists():
        torch.manual_seed(0)
        sd = OrderedDict((f'module.layer{i}.weight', torch.randn(2048, 2048)) for i in range(18))
        torch.save(sd, legacy, _use_new_zipfile_serialization=False)
    made['300 MB legacy format (DDP)'] = legacy
    return made


def generate_zoo(workdir, files=40, mb=30):
    """A zoo of FILES DDP state dicts of about MB each, in 4 folders."""
    import torch
    from collections import OrderedDict
    zoo = workdir / 'zoo'
    for i in range(files):
        path = zoo / f'family{i % 4}' / f'model{i:02d}.pth'
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(i)
        per = mb * 2**20 // 4 // 8  # 8 tensors of float32
        sd = OrderedDict((f'module.layer{k}.weight', torch.randn(per)) for k in range(8))
        torch.save(sd, path)
    return zoo


def bench_batch(args, workdir):
    """batch --jobs 1 against --jobs 2 over the zoo, each converting everything (--force)."""
    zoo = generate_zoo(workdir)
    files = sorted(zoo.rglob('*.pth'))
    total_mb = sum(f.stat().st_size for f in files) / 1e6
    out = workdir / 'zoo-out'
    commands = {f'batch --jobs {n}': [args.bin, 'batch', str(zoo), '-o', str(out), '--force', '-q',
                                      '--jobs', str(n)] for n in (1, 2)}
    commands['cp -r (the same files)'] = ['cp', '-r', str(zoo), str(out)]
    times = {k: [] for k in commands}
    cpus = {k: [] for k in commands}
    rss = {k: 0.0 for k in commands}
    for cmd in commands.values():  # warm the page cache alike
        shutil.rmtree(out, ignore_errors=True)
        run(cmd)
    for round_ in range(args.runs):
        for label, cmd in shuffled(commands, round_):
            shutil.rmtree(out, ignore_errors=True)
            wall, peak, cpu = run(cmd)
            times[label].append(wall)
            cpus[label].append(cpu)
            rss[label] = max(rss[label], peak)
    shutil.rmtree(out, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    cpu = {k: statistics.median(v) for k, v in cpus.items()}
    print(f'\n### batch: {len(files)} files, {total_mb:,.0f} MB, verify on cpu, median of {args.runs} runs\n')
    print('| command | median s | MB/s | × jobs 1 throughput | CPU s (user + sys) | cores busy '
          '| peak RSS MB |')
    print('| --- | ---: | ---: | ---: | ---: | ---: | ---: |')
    for label in commands:
        print(f'| {label} | {med[label]:.3f} | {total_mb / med[label]:,.0f} | '
              f'{med["batch --jobs 1"] / med[label]:.2f} | {cpu[label]:.2f} | '
              f'{cpu[label] / med[label]:.2f} | {rss[label]:.0f} |')
    # What bounds two jobs: the cores they keep busy, and how much more CPU time the same
    # work takes when two jobs share the machine.
    cores = os.cpu_count() or 1
    one, two = cpu['batch --jobs 1'], cpu['batch --jobs 2']
    one_busy = one / med['batch --jobs 1']
    print(f'\nOne job keeps {one_busy:.2f} cores busy, two {two / med["batch --jobs 2"]:.2f} of '
          f'{cores}; two jobs take {two / one:.2f}× the CPU time of one for the same files, so '
          f'{cores} busy cores allow at most {cores * one / (two * one_busy):.2f}× the '
          f'throughput of one job.')
    sys.stdout.flush()


PYTHON_BASELINE = r'''
import sys, torch
sd = torch.load(sys.argv[1], map_location='cpu')
sd = type(sd)((k[len('module.'):] if k.startswith('module.') else k, v) for k, v in sd.items())
torch.save(sd, sys.argv[2])
'''


def shuffled(commands, round_):
    """The commands of one round in an order of their own (seeded: the same every run of
    the benchmark). On the VM this was measured on, the process after the Python
    baseline pays to touch memory again (the memory Python freed goes back to the host):
    ckpt-convert --no-verify took 0.40 s right after it, 0.17 s otherwise, even 2 s later.
    In a fixed order (or a rotated one) the same command always took that seat."""
    items = list(commands.items())
    random.Random(round_).shuffle(items)
    return items


def run(cmd):
    """(wall seconds, peak RSS in MB, CPU seconds: user + system) of one command; fails
    loudly."""
    start = time.perf_counter()
    p = subprocess.run(['/usr/bin/time', '-v'] + cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if p.returncode != 0:
        sys.exit(f'bench: {" ".join(cmd)} failed ({p.returncode}):\n{p.stderr[-2000:]}')
    fields = {line.split(':')[0].strip(): line.split(':')[-1].strip()
              for line in p.stderr.splitlines() if ':' in line}
    rss_kb = int(fields['Maximum resident set size (kbytes)'])
    cpu = float(fields['User time (seconds)']) + float(fields['System time (seconds)'])
    return wall, rss_kb / 1024, cpu


def bench(name, src, args, workdir):
    out = workdir / 'out.pth'
    commands = {
        'cp': ['cp', str(src), str(out)],
        'ckpt-convert --no-verify': [args.bin, str(src), str(out), '--force', '-q', '--no-verify'],
        'ckpt-convert (verify on cpu)': [args.bin, str(src), str(out), '--force', '-q'],
        'ckpt-convert inspect': [args.bin, 'inspect', str(src)],
    }
    if not args.skip_python:
        commands['python torch.load/save'] = ['/usr/bin/python3', '-c', PYTHON_BASELINE, str(src), str(out)]
    times = {k: [] for k in commands}
    rss = {k: 0.0 for k in commands}
    # One untimed round warms the page cache for every command alike.
    for cmd in commands.values():
        run(cmd)
    for round_ in range(args.runs):
        for label, cmd in shuffled(commands, round_):
            if out.exists():
                out.unlink()
            wall, peak, _ = run(cmd)
            times[label].append(wall)
            rss[label] = max(rss[label], peak)
    if out.exists():
        out.unlink()
    med = {k: statistics.median(v) for k, v in times.items()}
    size = src.stat().st_size / 1e6
    print(f'\n### {name}: {src.name}, {size:,.0f} MB, median of {args.runs} runs\n')
    print('| command | median s | × cp | vs Python | peak RSS MB |')
    print('| --- | ---: | ---: | ---: | ---: |')
    for label in commands:
        vs_py = f'{med["python torch.load/save"] / med[label]:.1f}× faster' if 'python torch.load/save' in med and label != 'python torch.load/save' else ''
        print(f'| {label} | {med[label]:.3f} | {med[label] / med["cp"]:.2f} | {vs_py} | {rss[label]:.0f} |')
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--bin', required=True)
    ap.add_argument('--runs', type=int, default=5)
    ap.add_argument('--dir', default=os.environ.get('BENCH_DIR', '/tmp/ckpt-convert-bench'))
    ap.add_argument('--skip-python', action='store_true')
    ap.add_argument('--only', help='run only the benchmarks whose name contains this')
    args = ap.parse_args()
    workdir = Path(args.dir)
    workdir.mkdir(parents=True, exist_ok=True)
    print(f'# ckpt-convert benchmark, {time.strftime("%Y-%m-%d")}')
    print(f'machine: {platform.machine()}, {os.cpu_count()} cores, '
          f'{os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30:.0f} GiB; '
          f'files in {workdir} (page cache warm)')
    for name, src in generate(workdir).items():
        if args.only and args.only not in name:
            continue
        bench(name, src, args, workdir)
    if not args.only or args.only in 'batch':
        bench_batch(args, workdir)


if __name__ == '__main__':
    main()
