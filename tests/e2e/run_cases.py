#!/usr/bin/python3
"""Run a group of ckpt-convert e2e cases in one Python; exit 0 when none failed, 1 when one
did, 77 when every case was skipped. This is what CTest runs (one entry per group of
`cases.py --groups`); run_case.py runs a single case by hand.

    /usr/bin/python3 tests/e2e/run_cases.py --group zero.2 --bin PATH/ckpt-convert \
        --data tests/data --large-data BUILD/fixtures --work WORK_ROOT
    /usr/bin/python3 tests/e2e/run_cases.py NAME NAME... --bin ... --work WORK_ROOT

Why: starting a Python that imports torch took 1-3 s on the 2-core machines, more than most
cases take, and there are hundreds of cases, run twice by tools/test.sh. Here torch is
imported once and every case runs in a child forked from that process, so each still starts
from the same clean state (environment, cwd, signal handlers, torch's globals) and a case
that crashes or hangs takes only itself down. The parent never runs a torch operation, which
keeps the fork safe (no thread pool exists yet to be lost in the child).

Case NAME works in WORK_ROOT/NAME, which run_case.py's rules clear first.
"""
import argparse
import os
import signal
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True     # keep __pycache__ out of the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))

import run_case  # noqa: E402

# A case still running after this long is killed and fails (CTest's own timeout covers the
# whole group and would not say which case hung).
CASE_TIMEOUT_S = 300


def run_in_child(name, args):
    """Fork; the child runs case NAME and exits with its code. Returns (code, seconds); code 1,
    with the reason printed, when the child died of a signal (a hang past CASE_TIMEOUT_S)."""
    sys.stdout.flush()
    sys.stderr.flush()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.alarm(CASE_TIMEOUT_S)     # the default action ends the child
            code = run_case.run_case(name, args.bin, args.data, args.large_data,
                                     Path(args.work) / name)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    seconds = time.monotonic() - start
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status), seconds
    sig = os.WTERMSIG(status)
    why = (f'still running after {CASE_TIMEOUT_S} s, killed' if sig == signal.SIGALRM
           else f'the judge died of signal {signal.Signals(sig).name}')
    print(f'FAIL {name}: {why}', file=sys.stderr)
    return 1, seconds


def main(argv=None):
    ap = argparse.ArgumentParser(description='Run a group of ckpt-convert e2e cases.')
    ap.add_argument('names', nargs='*', help='case names (see cases.py --list)')
    ap.add_argument('--group', help='a group of cases.py --groups, run after any NAMEs')
    run_case.add_tool_and_data_options(ap, work_help='root of the cases\' scratch dirs')
    args = ap.parse_args(argv)

    run_case.one_thread_per_torch()
    import cases
    names = list(args.names)
    if args.group is not None:
        group = cases.groups().get(args.group)
        if group is None:
            print(f'run_cases: no group {args.group} (see cases.py --groups)', file=sys.stderr)
            return 1
        names += group
    if not names:
        ap.error('give case names or --group')
    # Imported here, once, for every child.
    import judge
    import torch  # noqa: F401

    failed, skipped = [], []
    for name in names:
        code, seconds = run_in_child(name, args)
        print(f'     {name}: {seconds:.2f} s')
        if code == judge.SKIP_EXIT:
            skipped.append(name)
        elif code != 0:
            failed.append(name)
    passed = len(names) - len(failed) - len(skipped)
    print(f'{passed} passed, {len(skipped)} skipped, {len(failed)} failed'
          + (f': {" ".join(failed)}' if failed else ''))
    if failed:
        return 1
    return judge.SKIP_EXIT if len(skipped) == len(names) else 0


if __name__ == '__main__':
    sys.exit(main())
