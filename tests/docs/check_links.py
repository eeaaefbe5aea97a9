#!/usr/bin/env python3
"""docs.links: the project explains itself from its own files.

Checks, in README.md and docs/*.md, that every relative link leads to a file of the
repository and every `#anchor` to a heading of that file (as GitHub makes anchors: lower
case, punctuation dropped, spaces to hyphens); and that no source, test, tool or build file
points at a DESIGN.md or STYLE.md, which a clone does not have (docs/architecture.md is the
design). Exit 0 when all hold, else 1 with one line per problem (FILE:LINE: what).

    /usr/bin/python3 tests/docs/check_links.py [ROOT]
"""
import re
import sys
from pathlib import Path

LINK = re.compile(r'\[[^\]]*\]\(([^)\s]+)\)')
HEADING = re.compile(r'^#{1,6}\s+(.*?)\s*#*\s*$')
FENCE = re.compile(r'^\s*```')
SOURCES = ('*.cc', '*.h', '*.py', '*.sh', '*.txt', '*.in', '*.toml')


def anchors(path):
    """The anchors GitHub gives the headings of the markdown file PATH."""
    found, seen, in_code = set(), {}, False
    for line in path.read_text(encoding='utf-8').splitlines():
        if FENCE.match(line):
            in_code = not in_code
            continue
        m = None if in_code else HEADING.match(line)
        if not m:
            continue
        text = re.sub(r'[`*_]|\[([^\]]*)\]\([^)]*\)', r'\1', m.group(1)).strip().lower()
        slug = re.sub(r'[^\w\- ]', '', text).replace(' ', '-')
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f'{slug}-{n}')
    return found


def check_links(root):
    problems = []
    for doc in [root / 'README.md'] + sorted((root / 'docs').glob('*.md')):
        in_code = False
        for number, line in enumerate(doc.read_text(encoding='utf-8').splitlines(), 1):
            if FENCE.match(line):
                in_code = not in_code
            if in_code:
                continue
            for target in LINK.findall(line):
                if re.match(r'[a-z]+:', target):  # https:, mailto:
                    continue
                file_part, _, anchor = target.partition('#')
                dest = (doc.parent / file_part).resolve() if file_part else doc
                where = f'{doc.relative_to(root)}:{number}'
                if not dest.exists():
                    problems.append(f'{where}: link to {target}: no such file')
                elif anchor and dest.suffix == '.md' and anchor not in anchors(dest):
                    problems.append(f'{where}: link to {target}: no heading with that anchor')
    return problems


def check_design_references(root):
    problems = []
    for folder in ('include', 'src', 'cli', 'tests', 'tools', 'fuzz'):
        for pattern in SOURCES:
            for path in sorted((root / folder).rglob(pattern)):
                if path.resolve() == Path(__file__).resolve():
                    continue
                text = path.read_text(encoding='utf-8', errors='replace')
                for number, line in enumerate(text.splitlines(), 1):
                    if re.search(r'\b(DESIGN|STYLE)\.md\b', line):
                        problems.append(f'{path.relative_to(root)}:{number}: points at a file a '
                                        f'clone does not have: {line.strip()[:80]}')
    cmake = root / 'CMakeLists.txt'
    for number, line in enumerate(cmake.read_text().splitlines(), 1):
        if re.search(r'\b(DESIGN|STYLE)\.md\b', line):
            problems.append(f'CMakeLists.txt:{number}: points at a file a clone does not have')
    return problems


def main(argv):
    root = Path(argv[1] if len(argv) > 1 else Path(__file__).resolve().parent.parent.parent)
    problems = check_links(root) + check_design_references(root)
    for problem in problems:
        print(problem)
    print(f'docs.links: {len(problems)} problem(s)')
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
