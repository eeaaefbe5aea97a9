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


def main(argv=None):
    ap = argparse.ArgumentParser(description='Run one ckpt-convert e2e case.')
    ap.add_argument('name', help='case name (see cases.py --list)')
    ap.add_argument('--bin', required=True, help='the ckpt-convert executable')
    ap.add_argument('--data', required=True, help='dir of the small fixtures (tests/data)')
    ap.add_argument('--large-data', default=None, help='dir of the --large fixtures')
    ap.add_argument('--work', required=True, help='fresh scratch dir for this case')
    args = ap.parse_args(argv)

    import cases
    fn = cases.CASES.get(args.name)
    if fn is None:
        print(f'FAIL {args.name}: no such case (see cases.py --list)', file=sys.stderr)
        return 1
    if not (os.path.isfile(args.bin) and os.access(args.bin, os.X_OK)):
        print(f'FAIL {args.name}: --bin {args.bin} is not an executable file', file=sys.stderr)
        return 1
    prepare_work(args.work)

    # One thread per torch in a case, however many cases ctest runs at once; set before
    # torch is imported, which only the cases that load checkpoints do.
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    import judge
    ctx = judge.Ctx(args.bin, args.data, args.large_data, args.work)
    try:
        fn(ctx)
    except judge.CaseSkipped as e:
        print(f'SKIP {args.name}: {e}', file=sys.stderr)
        return judge.SKIP_EXIT
    except judge.CaseFailure as e:
        msg = f'FAIL {args.name}: {e}'
        if ctx.last is not None:
            msg += '\n' + ctx.last.describe()
        print(msg, file=sys.stderr)
        return 1
    except Exception:  # noqa: BLE001 - an error in the judge or an unreadable output
        msg = f'FAIL {args.name}: unexpected error while judging:\n{traceback.format_exc()}'
        if ctx.last is not None:
            msg += ctx.last.describe()
        print(msg, file=sys.stderr)
        return 1
    print(f'PASS {args.name}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
