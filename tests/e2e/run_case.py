#!/usr/bin/python3
"""Run one ckpt-convert e2e case; exit 0 on pass, 1 on failure (with the reason, the
command that was run, its exit code, stdout and stderr).

    /usr/bin/python3 tests/e2e/run_case.py NAME --bin PATH/ckpt-convert \
        --data tests/data --large-data BUILD/fixtures --work FRESH_TMP_DIR

--work is created if missing. If it exists it must be empty or a work dir this script made
before (it holds a .ckpt-convert-e2e marker); its contents are then replaced.
"""
import argparse
import os
import shutil
import sys
import traceback
from pathlib import Path

sys.dont_write_bytecode = True     # keep __pycache__ out of the source tree
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

MARKER = '.ckpt-convert-e2e'


def prepare_work(work):
    work = Path(work)
    if work.exists():
        entries = os.listdir(work)
        if entries and MARKER not in entries:
            raise SystemExit(f'run_case: --work {work} is not empty and was not made by run_case.py; '
                             f'refusing to clear it')
        for e in entries:
            p = work / e
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
    work.mkdir(parents=True, exist_ok=True)
    (work / MARKER).write_text('scratch dir of tests/e2e/run_case.py; cleared on every run\n')
    (work / 'in').mkdir()
    (work / 'out').mkdir()


def run_case(name, bin_path, data, large_data, work):
    """Run case NAME in the fresh work dir WORK; print PASS, SKIP or FAIL (with the reason, the
    command, its exit code and output) and return the exit code: 0, judge.SKIP_EXIT or 1."""
    import cases
    fn = cases.CASES.get(name)
    if fn is None:
        print(f'FAIL {name}: no such case (see cases.py --list)', file=sys.stderr)
        return 1
    if not (os.path.isfile(bin_path) and os.access(bin_path, os.X_OK)):
        print(f'FAIL {name}: --bin {bin_path} is not an executable file', file=sys.stderr)
        return 1
    prepare_work(work)

    import judge
    ctx = judge.Ctx(bin_path, data, large_data, work)
    try:
        fn(ctx)
    except judge.CaseSkipped as e:
        print(f'SKIP {name}: {e}', file=sys.stderr)
        return judge.SKIP_EXIT
    except judge.CaseFailure as e:
        msg = f'FAIL {name}: {e}'
        if ctx.last is not None:
            msg += '\n' + ctx.last.describe()
        print(msg, file=sys.stderr)
        return 1
    except Exception:  # noqa: BLE001 - an error in the judge or an unreadable output
        msg = f'FAIL {name}: unexpected error while judging:\n{traceback.format_exc()}'
        if ctx.last is not None:
            msg += ctx.last.describe()
        print(msg, file=sys.stderr)
        return 1
    print(f'PASS {name}')
    return 0


def one_thread_per_torch():
    """One thread per torch in a case, however many cases ctest runs at once; must run before
    torch is imported."""
    os.environ.setdefault('OMP_NUM_THREADS', '1')


def add_tool_and_data_options(ap, work_help):
    ap.add_argument('--bin', required=True, help='the ckpt-convert executable')
    ap.add_argument('--data', required=True, help='dir of the small fixtures (tests/data)')
    ap.add_argument('--large-data', default=None, help='dir of the --large fixtures')
    ap.add_argument('--work', required=True, help=work_help)


def main(argv=None):
    ap = argparse.ArgumentParser(description='Run one ckpt-convert e2e case.')
    ap.add_argument('name', help='case name (see cases.py --list)')
    add_tool_and_data_options(ap, work_help='fresh scratch dir for this case')
    args = ap.parse_args(argv)
    one_thread_per_torch()
    return run_case(args.name, args.bin, args.data, args.large_data, args.work)


if __name__ == '__main__':
    sys.exit(main())
