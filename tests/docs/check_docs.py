#!/usr/bin/python3
"""Runs the shell sessions shown in README.md and docs/*.md and compares their output.

The convention (also in docs/architecture.md, "Tests"):

- Only fenced blocks opened with ```console are executed. In them, a line starting with `$ `
  is a command (a trailing `\\` continues it on the next line); the lines after it, up to the
  next `$ ` line or the end of the block, are its output exactly as a terminal shows it:
  stdout and stderr merged, in the order they were written.
- Each console block runs as one bash session (so `$ echo $?` shows the previous command's
  exit code) in a fresh work folder holding a copy of tests/data (the fixtures under their
  own names, `rules/`, `bad/`) and of tests/docs/files (inputs only the documents use, such as
  `expected_keys.txt`), with the tested binary's folder first on PATH, TERM=dumb and
  NO_COLOR=1. Files a command writes stay for the next commands of the same block only.
- Other blocks (```, ```bash, ```toml, ...) are syntax examples and are not run; a line
  starting with `$ ckpt-convert` in one of them is an error, so that no output shown as a
  session escapes the check.
- Before comparing, both sides are masked: timings (`0.12 s`, `3 ms`) and the work folder's
  absolute path (shown as `/tmp/docs`). Nothing else varies: the tool's output is
  deterministic, so byte counts, key counts and messages are compared exactly.

Usage:
  check_docs.py --bin build/ckpt-convert [--root .] [FILE.md...]
      runs every example and exits 1 if any output differs (file:line, command, expected,
      actual, and a diff for each).
  check_docs.py --bin build/ckpt-convert --update [FILE.md...]
      rewrites the shown outputs from the real runs, keeping a shown line wherever it masks to
      the same text as the real one (so its timings stay as shown). After a change to a
      message (or a merge of one), run it, read `git diff`, commit.

ctest runs it as `docs.examples` with /usr/bin/python3 (it needs only the standard library).
"""

import argparse
import difflib
import os
import re
import shutil
import subprocess
import sys
import tempfile

SHOWN_WORK_DIR = "/tmp/docs"
MARKER = "@@ckpt-docs-example {}@@"
TIMING = re.compile(r"\b\d+(?:\.\d+)? ?(?:s|ms|µs)\b")
FENCE = re.compile(r"^(\s*)```+\s*([A-Za-z0-9_+-]*)")
STDBUF = "/usr/libexec/coreutils/libstdbuf.so"


class Example:
    """One `$ command` of a console block: where it is, what it runs, what it shows."""

    def __init__(self, path, line, command, first_output_line, shown):
        self.path = path  # the Markdown file
        self.line = line  # 1-based line of the `$ ` line
        self.command = command  # continuation lines joined as bash reads them
        self.first_output_line = first_output_line  # 0-based index of the first output line
        self.shown = shown  # the output lines as the document shows them


def parse_blocks(path, lines):
    """Returns (console blocks as lists of Example, errors) for the Markdown `lines`."""
    blocks, errors = [], []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        lang = m.group(2)
        start = i + 1
        end = start
        while end < len(lines) and not lines[end].strip().startswith("```"):
            end += 1
        body = range(start, end)
        if lang != "console":
            for j in body:
                if lines[j].startswith("$ ckpt-convert"):
                    errors.append(f"{path}:{j + 1}: a shell session in a ```{lang} block is not "
                                  "checked: open the block with ```console")
        else:
            examples = []
            j = start
            while j < end:
                if not lines[j].startswith("$ "):
                    if not examples:
                        errors.append(f"{path}:{j + 1}: output before the first `$ ` command")
                    j += 1
                    continue
                line = j + 1
                command = lines[j][2:]
                while command.endswith("\\") and j + 1 < end:
                    j += 1
                    command = command + "\n" + lines[j]
                j += 1
                first = j
                while j < end and not lines[j].startswith("$ "):
                    j += 1
                examples.append(Example(path, line, command, first, lines[first:j]))
            blocks.append(examples)
        i = end + 1
    return blocks, errors


def mask(text, work):
    text = text.replace(work, SHOWN_WORK_DIR)
    return TIMING.sub("<time>", text).rstrip()


def trimmed(lines):
    lines = [l.rstrip() for l in lines]
    while lines and lines[-1] == "":
        lines.pop()
    return lines


def run_block(examples, binary, inputs):
    """Runs one console block in a fresh work folder; returns (work dir, outputs per example)."""
    work = tempfile.mkdtemp(prefix="ckpt-docs-")
    try:
        for folder in inputs:
            shutil.copytree(folder, work, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("README.md"))
        script = ['cd "$1" || exit 99', "__ckpt_docs_rc=0"]
        for n, example in enumerate(examples):
            script.append(f"printf '%s\\n' '{MARKER.format(n)}'")
            script.append("(exit $__ckpt_docs_rc)")
            script.append(example.command)
            script.append("__ckpt_docs_rc=$?")
        env = dict(os.environ)
        env.update({
            "PATH": os.path.dirname(os.path.abspath(binary)) + os.pathsep + env.get("PATH", ""),
            "TERM": "dumb", "NO_COLOR": "1", "LC_ALL": "C.UTF-8", "COLUMNS": "100",
        })
        if os.path.exists(STDBUF):  # stdout line-buffered, as on a terminal (what stdbuf -oL does)
            env["LD_PRELOAD"] = STDBUF
            env["_STDBUF_O"] = "L"
            # The sanitizer pass (tools/sanitize.sh) runs this test too: ASan refuses to start
            # when a preloaded library comes before its runtime, unless told this is fine.
            asan = env.get("ASAN_OPTIONS", "")
            env["ASAN_OPTIONS"] = (asan + ":" if asan else "") + "verify_asan_link_order=0"
        proc = subprocess.run(["bash", "-c", "\n".join(script), "docs-example", work],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                              timeout=120)
        text = proc.stdout.decode("utf-8", "replace").replace(work, SHOWN_WORK_DIR)
        outputs = []
        for n in range(len(examples)):
            begin = text.find(MARKER.format(n) + "\n")
            if begin < 0:
                outputs.append(["(the session ended before this command: exit "
                                f"{proc.returncode})"])
                continue
            begin += len(MARKER.format(n)) + 1
            end = text.find(MARKER.format(n + 1) + "\n", begin)
            outputs.append(text[begin:end if end >= 0 else len(text)].split("\n"))
        return work, outputs
    finally:
        shutil.rmtree(work, ignore_errors=True)


def updated_lines(shown, actual, work):
    """The output to show: a shown line wherever it masks to the real one, else the real one."""
    result = []
    for n, line in enumerate(actual):
        if n < len(shown) and mask(shown[n], work) == mask(line, work):
            result.append(shown[n])
        else:
            result.append(line)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin", required=True, help="the ckpt-convert binary to run")
    parser.add_argument("--root", default=os.path.join(os.path.dirname(__file__), "..", ".."),
                        help="the repository (README.md and docs/ are read from it)")
    parser.add_argument("--update", action="store_true",
                        help="rewrite the shown outputs from the real runs")
    parser.add_argument("files", nargs="*", help="Markdown files (default README.md, docs/*.md)")
    args = parser.parse_args()
    root = os.path.abspath(args.root)
    inputs = [os.path.join(root, "tests", "data"), os.path.join(root, "tests", "docs", "files")]
    files = args.files or [os.path.join(root, "README.md")] + sorted(
        os.path.join(root, "docs", f) for f in os.listdir(os.path.join(root, "docs"))
        if f.endswith(".md"))

    failures, errors = [], []
    counted = {"examples": 0, "blocks": 0, "files": 0}
    for path in files:
        rel = os.path.relpath(path, root)
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        blocks, parse_errors = parse_blocks(rel, lines)
        errors += parse_errors
        if blocks:
            counted["files"] += 1
        replacements = []  # (first line, end line, new lines), applied bottom-up
        for examples in blocks:
            counted["blocks"] += 1
            work, outputs = run_block(examples, args.bin, inputs)
            for example, output in zip(examples, outputs):
                counted["examples"] += 1
                shown, actual = trimmed(example.shown), trimmed(output)
                if [mask(l, work) for l in shown] == [mask(l, work) for l in actual]:
                    continue
                if args.update:
                    replacements.append((example.first_output_line,
                                         example.first_output_line + len(example.shown),
                                         updated_lines(shown, actual, work)))
                    failures.append(f"{rel}:{example.line}: updated: $ {example.command}")
                    continue
                diff = "\n".join(difflib.unified_diff(
                    [mask(l, work) for l in shown], [mask(l, work) for l in actual],
                    "shown", "actual", lineterm=""))
                failures.append(
                    f"{rel}:{example.line}: the output differs from the one shown\n"
                    f"  command: $ {example.command}\n"
                    "  expected (as shown):\n" + "".join(f"    {l}\n" for l in shown) +
                    "  actual:\n" + "".join(f"    {l}\n" for l in actual) +
                    "  diff (masked):\n" + "".join(f"    {l}\n" for l in diff.split("\n")))
        if args.update and replacements:
            for first, end, new in sorted(replacements, reverse=True):
                lines[first:end] = new
            with open(path, "w", encoding="utf-8") as f:
                f.write("\n".join(lines))

    for message in errors + failures:
        print(message, file=sys.stderr)
    summary = (f"{counted['examples']} example(s) in {counted['blocks']} console block(s) of "
               f"{counted['files']} file(s)")
    if args.update:
        print(f"check_docs: {summary}: {len(failures)} output(s) rewritten")
        return 1 if errors else 0
    if errors or failures:
        print(f"check_docs: {summary}: {len(failures)} differ, {len(errors)} other problem(s)",
              file=sys.stderr)
        return 1
    if counted["examples"] == 0:
        print("check_docs: no ```console example found: nothing was checked", file=sys.stderr)
        return 1
    print(f"check_docs: {summary}: every output as shown")
    return 0


if __name__ == "__main__":
    sys.exit(main())
