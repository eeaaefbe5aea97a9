#!/usr/bin/env python3
"""Writes the man page and the bash completion of ckpt-convert from its own --help.

Run by the build after the executable links (CMakeLists.txt), so neither can drift from the
command line: the man page is every command's --help laid out in roff, the completion gets
each command's options (and how many values each takes) and the presets of --list-presets.

The help is read loosely, as CLI11 lays it out, because its wording changes often: a first
paragraph (the description), a `Usage:` line, unindented `Name:` headings over option
entries (`  -o,--output TEXT   what it does`, wrapped terms continuing on a deeper-indented
line), and a footer of unindented CAPITALS headings over indented text. Anything this does
not recognise goes into the man page verbatim rather than being dropped.
"""
import argparse
import re
import subprocess
import sys

ENTRY_HEADING = re.compile(r"^(\S.*):$")            # "Options:", "Rules (repeatable, ...):"
TERM_SPLIT = re.compile(r"\s{2,}")
OPTION_NAME = re.compile(r"^-{1,2}[A-Za-z0-9][A-Za-z0-9-]*$")
# Words CLI11 puts after an option's value names: they are not values.
NOT_VALUES = ("REQUIRED", "...", "Excludes:", "Needs:")


class Entry:
    """One option or positional of a help: its term as printed, its description."""

    def __init__(self, term, description):
        self.term = term
        self.description = description
        tokens = term.split()
        names = tokens[0].split(",") if tokens else []
        self.names = [n for n in names if OPTION_NAME.match(n)]
        self.arity = 0
        for token in tokens[1:]:
            if token in NOT_VALUES or token.endswith(":") or token.startswith("--"):
                break
            if token.startswith("["):  # --extract [=KEY]: only ever --extract=KEY
                break
            self.arity += 1


class Help:
    """A parsed --help: description, usage, entry sections, then footer sections."""

    def __init__(self, text):
        self.description = []
        self.usage = ""
        self.sections = []  # (heading, [Entry]) or (heading, [str]) for footer text
        lines = text.rstrip("\n").split("\n")
        i = 0
        while i < len(lines) and not lines[i].startswith("Usage:"):
            if lines[i].strip():
                self.description.append(lines[i].strip())
            i += 1
        if i < len(lines):
            self.usage = lines[i][len("Usage:"):].strip()
            i += 1
        current = None
        for line in lines[i:]:
            if not line.strip():
                if current is not None and current[2] == "footer":
                    current[1].append("")
                continue
            if not line[0].isspace():
                match = ENTRY_HEADING.match(line)
                if match and not is_footer_heading(line):
                    current = (match.group(1), [], "entries")
                    self.sections.append(current)
                    continue
                if is_footer_heading(line):
                    current = (line.strip(), [], "footer")
                    self.sections.append(current)
                    continue
                if current is None or current[2] != "footer":
                    current = ("", [], "footer")
                    self.sections.append(current)
                current[1].append(line)
                continue
            if current is None:
                current = ("", [], "footer")
                self.sections.append(current)
            if current[2] == "entries":
                indent = len(line) - len(line.lstrip())
                if indent <= 2 or not current[1]:
                    parts = TERM_SPLIT.split(line.strip(), maxsplit=1)
                    current[1].append(Entry(parts[0], parts[1] if len(parts) > 1 else ""))
                else:
                    last = current[1][-1]
                    last.description = (last.description + " " + line.strip()).strip()
            else:
                current[1].append(line)

    def entries(self):
        for heading, items, kind in self.sections:
            if kind == "entries":
                yield heading, items

    def options(self):
        """Every option entry, in order, once per name."""
        seen = set()
        for _, items in self.entries():
            for entry in items:
                if entry.names and not seen.intersection(entry.names):
                    seen.update(entry.names)
                    yield entry


def run_help(binary, *args):
    result = subprocess.run([binary, *args], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"make_cli_docs.py: {binary} {' '.join(args)}: exit {result.returncode}: "
                 f"{result.stderr.strip()}")
    return result.stdout


# --- roff -------------------------------------------------------------------------------

def roff(text):
    """`text` escaped for roff: backslashes, hyphens (so options copy and search), and a
    leading period or quote that would start a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    if text.startswith((".", "'")):
        text = "\\&" + text
    return text


def roff_term(term):
    tokens = term.split(" ")
    head = ",".join(f"\\fB{roff(n)}\\fR" for n in tokens[0].split(","))
    rest = " ".join(tokens[1:])
    return head + (f" \\fI{roff(rest)}\\fR" if rest else "")


def is_footer_heading(line):
    """An unindented line in capitals (words in parentheses aside): "EXIT CODES",
    "RULE FILES (--rules FILE, TOML)"."""
    bare = re.sub(r"\([^)]*\)", "", line).strip()
    return bool(re.match(r"^[A-Z]{2,}", bare)) and not re.search(r"[a-z]", bare)


def footer_runs(lines, program):
    """Split a footer section's lines into runs: prose to be filled, or verbatim (a table,
    an example). A line is verbatim when it is indented past the section's text, aligns
    columns with runs of spaces, or starts with the program's name; a prose-looking line
    between verbatim ones (or ending the section after one) stays with them. Blank lines
    end a run."""
    text = [l for l in lines if l.strip()]
    if not text:
        return []
    base = min(len(l) - len(l.lstrip()) for l in text)
    kinds = []
    for line in lines:
        body = line[base:]
        if not line.strip():
            kinds.append("blank")
        elif body[0].isspace() or TERM_SPLIT.search(body.strip()) or body.startswith(program + " "):
            kinds.append("verbatim")
        else:
            kinds.append("prose")
    for i, kind in enumerate(kinds):
        after = kinds[i + 1] if i + 1 < len(kinds) else "blank"
        if kind == "prose" and i > 0 and kinds[i - 1] == "verbatim" and after in ("verbatim", "blank"):
            kinds[i] = "verbatim"
    runs = []  # (kind, lines, whether it starts a paragraph)
    after_blank = True
    for line, kind in zip(lines, kinds):
        if kind == "blank":
            after_blank = True
        elif not after_blank and runs[-1][0] == kind:
            runs[-1][1].append(line[base:])
        else:
            runs.append((kind, [line[base:]], after_blank))
            after_blank = False
    return runs


def render_sections(help_, program, out):
    for heading, items, kind in help_.sections:
        if heading:
            out.append(f'.SS "{roff(heading)}"')
        if kind == "entries":
            for entry in items:
                out.append(".TP")
                out.append(roff_term(entry.term))
                out.append(roff(entry.description) if entry.description else "\\&")
            continue
        for kind, run, new_paragraph in footer_runs(items, program):
            if new_paragraph:
                out.append(".PP")
            if kind == "prose":
                out.extend(roff(l) for l in run)
            else:
                out.append(".nf")
                out.extend(roff(l) for l in run)
                out.append(".fi")


def man_page(program, version, top, commands):
    summary = top.description[0].rstrip(".") if top.description else program
    out = [
        f'.TH {roff(program.upper())} 1 "" "{program} {version}" "User Commands"',
        ".nh",
        ".ad l",
        ".SH NAME",
        f"{roff(program)} \\- {roff(summary[0].lower() + summary[1:])}",
        ".SH SYNOPSIS",
        ".nf",
        roff(f"{program} {top.usage[len(program):].strip()}" if top.usage else program),
    ]
    for name, help_ in commands:
        out.append(roff(help_.usage or f"{program} {name}"))
    out += [".fi", ".SH DESCRIPTION"]
    out.extend(roff(l) for l in top.description)
    out.append(".SH OPTIONS")
    render_sections(top, program, out)
    for name, help_ in commands:
        out.append(f'.SH "{roff(name.upper())} COMMAND"')
        out.extend(roff(l) for l in help_.description)
        render_sections(help_, program, out)
    return "\n".join(out) + "\n"


# --- bash completion --------------------------------------------------------------------

def completion(template, top, commands, presets):
    data = ["# Generated from ckpt-convert --help by tools/make_cli_docs.py.",
            f"_ckpt_convert_commands='{' '.join(name for name, _ in commands)}'",
            f"_ckpt_convert_presets='{' '.join(presets)}'"]
    for name, help_ in [("convert", top)] + commands:
        options = list(help_.options())
        words = " ".join(n for e in options for n in e.names if n.startswith("--"))
        arity = " ".join(f"{n}={e.arity}" for e in options for n in e.names if e.arity)
        var = name.replace("-", "_")
        data.append(f"_ckpt_convert_options_{var}='{words}'")
        data.append(f"_ckpt_convert_arity_{var}='{arity}'")
    marker = "# @CKPT_COMPLETION_DATA@"
    if marker not in template:
        sys.exit(f"make_cli_docs.py: the completion template lacks the line '{marker}'")
    return template.replace(marker, "\n".join(data))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin", required=True, help="the ckpt-convert executable")
    parser.add_argument("--version", required=True)
    parser.add_argument("--man", help="write the man page here")
    parser.add_argument("--completion", help="write the bash completion here")
    parser.add_argument("--completion-template", help="tools/completion/ckpt-convert.bash.in")
    args = parser.parse_args()
    program = "ckpt-convert"
    top = Help(run_help(args.bin, "--help"))
    names = [e.term.split()[0] for heading, items in top.entries()
             if heading.lower().startswith("subcommand") for e in items]
    if not names:
        sys.exit("make_cli_docs.py: no subcommands in ckpt-convert --help")
    commands = [(name, Help(run_help(args.bin, name, "--help"))) for name in names]
    if args.man:
        with open(args.man, "w") as f:
            f.write(man_page(program, args.version, top, commands))
    if args.completion:
        presets = re.findall(r"^([a-z0-9][a-z0-9_-]*):", run_help(args.bin, "--list-presets"), re.M)
        if not presets:
            sys.exit("make_cli_docs.py: no presets in ckpt-convert --list-presets")
        with open(args.completion_template) as f:
            template = f.read()
        with open(args.completion, "w") as f:
            f.write(completion(template, top, commands, presets))


if __name__ == "__main__":
    main()
