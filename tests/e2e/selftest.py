#!/usr/bin/python3
"""JUDGE SELF-TEST: check the e2e judge itself, without the C++ tool.

    /usr/bin/python3 tests/e2e/selftest.py [--large-data DIR] [--jobs N] [--work DIR]

1. Runs every case of cases.py against fake_convert.py (a Python stand-in for ckpt-convert):
   all must pass (large cases only if --large-data holds the --large fixtures).
2. Runs selected cases with FAKE_CONVERT_BUG=<bug> (the fake misbehaves in one way): each
   must FAIL, with the expected reason in the judge's message. This shows each check bites.
Exit 0 when both hold.
"""
import argparse
import concurrent.futures
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.dont_write_bytecode = True     # keep __pycache__ out of the source tree
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
FAKE = HERE / 'fake_convert.py'
PY = '/usr/bin/python3'

# bug -> (case that must fail, text the failure message must contain)
MUTANTS = {
    'keep_metadata_keys': ('convert_dp_tiny_cnn_loads_strict', '_metadata keys are not the rewritten prefixes'),
    'first_metadata_wins': ('convert_dp_tiny_cnn_loads_strict', "_metadata['']"),
    'drop_metadata': ('convert_fsdp_style_loads_strict', '_metadata is missing'),
    'break_sharing': ('convert_tied_weights_keeps_sharing', 'do not share'),
    'contiguous': ('convert_views_keep_sharing_and_layout', 'stride'),
    'plus_zero': ('convert_dtypes_bitexact', 'differ bitwise'),
    'keep_location': ('convert_cuda3_tagged_loads_without_map_location', 'location tags'),
    'drop_optimizer': ('convert_imagenet_checkpoint_keeps_structure', 'keys'),
    'no_extract': ('extract_imagenet_checkpoint_bare_state_dict', 'weights_only'),
    'dry_run_writes': ('dry_run_writes_nothing', '--dry-run left'),
    'no_collision_check': ('bad_colliding_rejected', 'exit code 0'),
    'allow_same_file': ('bad_in_equals_out_rejected', 'does not give the cause'),
    'leave_tmp': ('bad_empty_rejected', 'output dir holds'),
    'traceback': ('bad_text_rejected', "'Traceback'"),
    'multi_line_error': ('bad_tar_rejected', 'exactly one non-empty line'),
    'wrong_exit_code': ('bad_truncated_half_rejected', 'exit code 3'),
    'run_pickle': ('bad_os_system_rejected', "os.system call RAN"),
}


def run_case(name, work_root, large_data, bug=None):
    env = dict(os.environ)
    env.pop('FAKE_CONVERT_BUG', None)
    if bug:
        env['FAKE_CONVERT_BUG'] = bug
    cmd = [PY, str(HERE / 'run_case.py'), name, '--bin', str(FAKE), '--data', str(ROOT / 'tests' / 'data'),
           '--work', str(Path(work_root) / (name + ('.' + bug if bug else '')))]
    if large_data:
        cmd += ['--large-data', str(large_data)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    return p.returncode, p.stdout + p.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--large-data', help='dir with the --large fixtures (else large cases are skipped)')
    ap.add_argument('--jobs', type=int, default=os.cpu_count() or 2)
    ap.add_argument('--work', help='scratch dir (default: a new temp dir)')
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix='ckpt-e2e-selftest-'))
    sys.path.insert(0, str(HERE))
    import cases
    names = [n for n in cases.CASES
             if args.large_data or not any(n == f'convert_{Path(f).stem}_loads_strict'
                                           for f, fx in cases.FIXTURES.items() if fx.large)]
    skipped = len(cases.CASES) - len(names)
    failures = []
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        for name, (rc, out) in zip(names, pool.map(lambda n: run_case(n, work, args.large_data), names)):
            print(f'{"ok  " if rc == 0 else "FAIL"} {name}')
            if rc != 0:
                failures.append(f'{name} failed against the fake:\n{out}')
        bugs = list(MUTANTS.items())
        results = pool.map(lambda item: run_case(item[1][0], work, args.large_data, bug=item[0]), bugs)
        for (bug, (name, needle)), (rc, out) in zip(bugs, results):
            caught = rc == 1 and needle in out
            print(f'{"ok  " if caught else "FAIL"} mutant {bug}: {name} '
                  f'{"fails as expected" if caught else "did not fail for the expected reason"}')
            if not caught:
                failures.append(f'mutant {bug}: {name} rc={rc}, expected a failure mentioning {needle!r}:\n{out}')
    print(f'\n{len(names)} cases run against the fake ({skipped} large skipped), {len(MUTANTS)} mutants; '
          f'work dir {work}')
    for f in failures:
        print('\n' + f)
    print('SELFTEST ' + ('FAILED' if failures else 'PASSED'))
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
