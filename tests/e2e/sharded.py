"""Where the e2e cases find the sharded fixtures of tools/make_sharded_fixtures.py:
LARGE_DATA/sharded/FAMILY/NAME/, each holding run/, expected.pt (not for a negative
fixture) and fixture.json ({"model", "options", "error"})."""
import json

from judge import CaseFailure


def root(ctx):
    """LARGE_DATA/sharded, or a CaseFailure saying how to write it."""
    folder = ctx.large_data / 'sharded' if ctx.large_data else None
    if folder is None or not folder.is_dir():
        raise CaseFailure(f'sharded fixtures missing under {folder} (run: /usr/bin/python3 '
                          f'tools/make_sharded_fixtures.py --out LARGE_DATA/sharded)')
    return folder


def fixture(ctx, family, name):
    """(folder, fixture.json) of the fixture FAMILY/NAME."""
    folder = root(ctx) / family / name
    if not (folder / 'fixture.json').is_file():
        raise CaseFailure(f'{family} fixture missing: {folder} (run: /usr/bin/python3 '
                          f'tools/make_sharded_fixtures.py --out LARGE_DATA/sharded --only {family})')
    return folder, json.loads((folder / 'fixture.json').read_text())


def every_fixture(ctx):
    """{family/name: (folder, fixture.json)} of every sharded fixture."""
    return {f'{spec.parent.parent.name}/{spec.parent.name}': (spec.parent, json.loads(spec.read_text()))
            for spec in sorted(root(ctx).glob('*/*/fixture.json'))}
