#!/usr/bin/python3
"""Times shell commands side by side, to compare two builds of ckpt-convert (or any commands)
on a noisy machine: every round runs each command once, in an order shuffled per round
(seeded by the round's number), after removing its output and calling sync(); the table shows
each command's median and fastest time over the rounds.

    tools/bench/side_by_side.py ROUNDS NAME=COMMAND ...

COMMAND is run by the shell with `{out}` replaced by a scratch path of its own
(/tmp/side-by-side-NAME); whatever starts with that path is removed before each run. Example:

    tools/bench/side_by_side.py 11 \\
        "cp=cp big.pth {out}" \\
        "old=/tmp/ckpt-convert-old --dtype bf16 big.pth {out}.pth" \\
        "new=build-bench/ckpt-convert --dtype bf16 big.pth {out}.pth"

A command that fails stops the run with its stderr. Unlike tools/bench.sh this adds no
/usr/bin/time wrapper and no memory polling, so it measures only the wall time.
"""
import glob
import os
import random
import shutil
import statistics
import subprocess
import sys
import time


def remove_outputs(prefix):
    for path in glob.glob(glob.escape(prefix) + '*'):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def main(argv):
    if len(argv) < 3 or not argv[1].isdigit() or any('=' not in a for a in argv[2:]):
        sys.exit(__doc__)
    rounds = int(argv[1])
    commands = [a.split('=', 1) for a in argv[2:]]
    times = {name: [] for name, _ in commands}
    for r in range(rounds):
        order = commands[:]
        random.Random(r).shuffle(order)
        for name, command in order:
            out = f'/tmp/side-by-side-{name}'
            remove_outputs(out)
            os.sync()
            start = time.perf_counter()
            done = subprocess.run(command.format(out=out), shell=True, capture_output=True,
                                  text=True)
            elapsed = time.perf_counter() - start
            if done.returncode != 0:
                sys.exit(f'{name}: exit {done.returncode}\n{done.stderr[-2000:]}')
            times[name].append(elapsed)
    for name, _ in commands:
        remove_outputs(f'/tmp/side-by-side-{name}')
    width = max(len(name) for name, _ in commands)
    print(f'{"command":{width}}  median s  fastest s   ({rounds} rounds)')
    for name, _ in commands:
        print(f'{name:{width}}  {statistics.median(times[name]):8.3f}  {min(times[name]):9.3f}')


if __name__ == '__main__':
    main(sys.argv)
