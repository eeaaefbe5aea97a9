r"""ckpt-convert e2e cases for key rules, presets, rule files, --json and --dry-run.

Registered in the registry of cases.py (cases.py imports this module), so they are listed by
`cases.py --list` and run by run_case.py like every other case. Fixture expectations for the
fixtures used only here are added to cases.FIXTURES below.

The CLI contract judged here:
- rules, in order: the preset's (`--preset`, default `unwrap`; `none`, `lightning`, `ddp`,
  `add-module`), then `--strip`, `--add-prefix`, `--replace OLD NEW`, `--drop-component NAME`,
  `--regex PAT REPL`, `--drop PAT`, `--keep PAT` and the `[[rule]]`s of `--rules FILE` (TOML),
  in command-line order. Patterns are RE2 and behave as Python's `re`: `--regex` is
  `re.sub(PAT, REPL, key)` (every match anywhere, `\1` / `\g<name>` in REPL; `$1` is a
  usage error, exit 2, that says `\1`), `--drop`/`--keep` select the keys `re.search` finds
  PAT in. Renaming rules also rewrite the `_metadata` module prefixes; drop/keep remove
  entries only.
- colliding keys / an empty key: exit 1; a user rule that matches nothing: a
  `ckpt-convert: warning: ` line and exit 0, or exit 1 with `--require-match`.
- `--json`: one object on stdout valid against docs/report.schema.json; `--dry-run`: nothing
  written, `- old` / `+ new` lines (`- old ... (dropped)`).
The judge's own model of the rules is RuleChain below.
"""
import collections
import json
import re
import sys
from pathlib import Path

sys.dont_write_bytecode = True     # keep __pycache__ out of the source tree
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))


from judge import host_cases  # noqa: E402

cases = host_cases()

cases.FIXTURES.update({
    # bearpaw optimizer lr/momentum and best_acc are Python floats: BINFLOAT
    'bearpaw_vgg.pth': cases.Fixture('vgg_like', 'state_dict', weights_only_limits={'opcode BINFLOAT'}),
    # optimizer_states lr and hyper_parameters lr are Python floats: BINFLOAT
    'lightning.pth': cases.Fixture('tiny_cnn', 'state_dict', weights_only_limits={'opcode BINFLOAT'}),
    'lightning_fabric.pth': cases.Fixture('tiny_cnn'),
    'backbone_aux.pth': cases.Fixture('encoder_net'),
})

BACKBONE_RULES = 'rules/backbone_to_encoder.toml'
ERRORS_RULES = 'rules/errors.toml'
WARNING_PREFIX = 'ckpt-convert: warning: '
SCHEMA = ROOT / 'docs' / 'report.schema.json'
PRESET_NAMES = ('unwrap', 'none', 'lightning', 'ddp', 'add-module')


def case(fn):
    if fn.__name__ in cases.CASES:
        raise SystemExit(f'cases_rules.py: case {fn.__name__} is already registered')
    return cases.case(fn)


def J():
    return cases.J()


# ----------------------------------------------------------------------------- the rule model

UNWRAP_COMPONENTS = ('_fsdp_wrapped_module', '_checkpoint_wrapped_module')
UNWRAP_LEADING = ('module.', '_orig_mod.')

# preset -> its rules, in the same form as user rules (kind, args...)
PRESETS = {
    'unwrap': [('unwrap',)],
    'none': [],
    'lightning': [('unwrap',), ('strip', '_forward_module.'), ('strip', 'model.')],
    'ddp': [('strip-repeated', 'module.')],
    'add-module': [('add-prefix', 'module.')],
}
RENAMING = ('unwrap', 'strip', 'strip-repeated', 'add-prefix', 'replace', 'drop-component', 'regex')


def apply_rule(rule, k):
    """One rule on key K: the new key, or None when the rule removes the entry."""
    kind, args = rule[0], rule[1:]
    if kind == 'unwrap':
        k = '.'.join(c for c in k.split('.') if c not in UNWRAP_COMPONENTS)
        while k.startswith(UNWRAP_LEADING):
            k = k[len(next(p for p in UNWRAP_LEADING if k.startswith(p))):]
        return k
    if kind == 'strip':
        return k[len(args[0]):] if k.startswith(args[0]) else k
    if kind == 'strip-repeated':
        while args[0] and k.startswith(args[0]):
            k = k[len(args[0]):]
        return k
    if kind == 'add-prefix':
        return args[0] + k
    if kind == 'replace':
        return args[1] + k[len(args[0]):] if k.startswith(args[0]) else k
    if kind == 'drop-component':
        return '.'.join(c for c in k.split('.') if c != args[0])
    if kind == 'regex':
        return re.sub(args[0], args[1], k)
    if kind == 'drop':
        return None if re.search(args[0], k) else k
    if kind == 'keep':
        return k if re.search(args[0], k) else None
    raise ValueError(f'unknown rule kind {kind}')


class RuleChain:
    """The judge's model of ckpt-convert's rules: PRESET's rules, then RULES in order.
    Same interface as judge.Rules (key, prefix, adds_prefix), except that key() returns None
    for an entry a drop/keep rule removes."""

    def __init__(self, preset='unwrap', rules=()):
        self.preset = preset
        self.user = [tuple(r) for r in rules]
        self.rules = PRESETS[preset] + self.user

    def key(self, k):
        for r in self.rules:
            k = apply_rule(r, k)
            if k is None:
                return None
        return k

    def rename(self, k):
        for r in self.rules:
            if r[0] in RENAMING:
                k = apply_rule(r, k)
        return k

    def prefix(self, p):
        """A _metadata prefix ('' = root) through the renaming rules, as a key prefix."""
        form = self.rename(p + '.' if p else '')
        return form[:-1] if form.endswith('.') else form

    @property
    def adds_prefix(self):
        return any(r[0] == 'add-prefix' for r in self.rules)

    def options(self):
        """The user rules as command-line options (the preset is given separately)."""
        out = []
        for r in self.user:
            out += ['--' + r[0]] + list(r[1:])
        return out


def rule_comparison(rules):
    """A judge.Comparison that knows dropped entries: the output state dict must hold
    exactly the surviving keys, in order, renamed; _metadata prefixes go through the
    renaming rules; a module prefix whose every entry was dropped may stay or go."""
    j = J()

    class RuleComparison(j.Comparison):
        def __init__(self, rules):
            super().__init__(rules)
            self.dropped = []          # (in_path, key)
            self.optional_prefixes = set()

        def compare_state_dict(self, a, b, ipath, opath):
            where = j.fmt_path(opath)
            j.check(isinstance(b, dict) and type(b) is type(a),
                    f'{where}: state dict became {type(b).__name__} (input: {type(a).__name__})')
            pairs = [(k, self.rules.key(k)) for k in a]
            expected = [nk for _, nk in pairs if nk is not None]
            got = list(b.keys())
            if got != expected:
                missing = [k for k in expected if k not in b][:5]
                extra = [k for k in got if k not in expected][:5]
                raise j.CaseFailure(
                    f'{where}: state dict keys differ from the input keys under the rules '
                    f'(missing {missing}, unexpected {extra}, or order differs; expected '
                    f'{expected[:8]}..., got {got[:8]}...)')
            for k, nk in pairs:
                if nk is None:
                    self.dropped.append((ipath, k))
                else:
                    self.compare_tensor(a[k], b[nk], ipath + (k,), opath + (nk,))
            self.compare_metadata_with_drops(a, b, where, pairs)
            self.state_dicts.append((ipath, a, opath, b))

        def compare_metadata_with_drops(self, a, b, where, pairs):
            am = getattr(a, '_metadata', None)
            if am is None:
                return
            bm = getattr(b, '_metadata', None)
            j.check(bm is not None, f'{where}: _metadata is missing from the output state dict')
            mapped = collections.OrderedDict()
            for p, v in am.items():
                mapped.setdefault(self.rules.prefix(p), []).append((p, v))

            def all_dropped(p):
                under = [nk for k, nk in pairs if not p or k.startswith(p + '.')]
                return bool(under) and all(nk is None for nk in under)
            optional = {q for q, src in mapped.items() if all(all_dropped(p) for p, _ in src)}
            self.optional_prefixes |= optional
            missing = [q for q in mapped if q not in bm and q not in optional]
            extra = [q for q in bm if q not in mapped and not (q == '' and self.rules.adds_prefix)]
            j.check(not missing and not extra,
                    f'{where}: _metadata keys are not the prefixes under the renaming rules: '
                    f'missing {missing[:6]}, unexpected {extra[:6]} (input prefixes {list(am)[:6]}...)')
            for q, src in mapped.items():
                if q in bm:
                    j.check(bm[q] == src[-1][1],
                            f'{where}: _metadata[{q!r}] = {bm[q]!r}, expected {src[-1][1]!r} '
                            f'(the innermost of {[v for _, v in src]!r})')

    return RuleComparison(rules)


# ----------------------------------------------------------------------------- judging

def load_output(ctx, fx, inp, out, bare, location='cpu'):
    """torch.load(OUT, weights_only=True), or, for a full checkpoint whose input torch 1.13
    cannot load that way either, the safe full load after checking the reasons are the
    input's (as cases.judge_output does); BARE: a bare state dict, which must load with
    weights_only=True. Also: every storage is tagged LOCATION."""
    j = J()
    try:
        locs = j.storage_locations(out)
    except Exception as e:  # noqa: BLE001
        raise j.CaseFailure(f'the output does not load with torch.load: {type(e).__name__}: '
                            f'{str(e)[:1500]}') from None
    j.check(locs and set(locs) == {location},
            f'storage location tags {sorted(set(locs))}, expected all {location!r}')
    try:
        return j.load_weights_only(out)
    except Exception as e:  # noqa: BLE001
        msg = str(e).split('WeightsUnpickler error: ')[-1]
        j.check(not bare, f'the output, a bare state dict, does not load with weights_only=True: {msg}')
        j.check(fx.weights_only_limits,
                f'output does not load with weights_only=True (the input has no such limit): {msg}')
        out_blockers = j.weights_only_blockers(out)
        in_blockers = j.weights_only_blockers(inp)
        j.check(in_blockers == fx.weights_only_limits,
                f'judge table out of date: input weights_only blockers {sorted(in_blockers)}, '
                f'FIXTURES says {sorted(fx.weights_only_limits)}')
        j.check(out_blockers and out_blockers <= in_blockers,
                f'output weights_only blockers {sorted(out_blockers)} are not among the input\'s '
                f'{sorted(in_blockers)}: {msg}')
        j.check(j.blocker_in_error(msg) in out_blockers,
                f'weights_only load fails for another reason than {sorted(out_blockers)}: {msg}')
        return j.load(out)


def judge_rules(ctx, name, inp, out, rules, extract=False, model_wrapper=None, ref_metadata=True):
    """Like cases.judge_output, for any RuleChain (drops included): the output loads
    (weights_only where torch 1.13 can), every surviving tensor equals the input's bitwise
    under its new key, dropped entries are gone, sharing is kept, everything that is not a
    state dict is equal, and the model state dict loads strict into the plain model
    (MODEL_WRAPPER(plain) if given) with the model's own _metadata. Returns the comparison."""
    j = J()
    fx = cases.FIXTURES[name]
    out_obj = load_output(ctx, fx, inp, out, bare=extract)
    in_obj = j.load(inp, map_location='cpu')
    cmp = rule_comparison(rules)
    if extract:
        j.check(j.is_state_dict(out_obj), f'--extract output is a {type(out_obj).__name__}, not a state dict')
        cmp.compare(j.find_model_state_dict(in_obj, fx.sd_key), out_obj)
        out_sd = out_obj
    else:
        cmp.compare(in_obj, out_obj)
        out_sd = out_obj[fx.sd_key] if fx.sd_key else out_obj
    cmp.check_sharing()
    if fx.model:
        from models import build
        target = build(fx.model)
        if model_wrapper:
            target = model_wrapper(target)
        try:
            target.load_state_dict(out_sd, strict=True)
        except Exception as e:  # noqa: BLE001
            raise j.CaseFailure(f'load_state_dict(strict=True) into {type(target).__name__} fails: '
                                f'{str(e)[:1500]}') from None
        if ref_metadata:
            want = dict(target.state_dict()._metadata)
            got = dict(getattr(out_sd, '_metadata', {}) or {})
            wrong = sorted(q for q in want if got.get(q) != want[q])
            extra = sorted(q for q in got if q not in want and q not in cmp.optional_prefixes)
            j.check(not wrong and not extra,
                    f'_metadata differs from the {type(target).__name__} model\'s: at {wrong[:6]} got '
                    f'{[got.get(q) for q in wrong[:6]]}, want {[want[q] for q in wrong[:6]]}; '
                    f'unexpected {extra[:6]}')
    return cmp


def run(ctx, *args):
    r = ctx.run(*args)
    J().check_clean_exit(r)
    return r


def run_json(ctx, *args):
    """Run with --json: stdout must be exactly one JSON object valid against the schema,
    whose exit_code is the process's and whose status says ok exactly when it is 0."""
    j = J()
    r = run(ctx, *args, '--json')
    try:
        report = json.loads(r.stdout)
    except ValueError as e:
        raise j.CaseFailure(f'--json: stdout is not one JSON object: {e}') from None
    check_schema(report)
    j.check(report['exit_code'] == r.rc, f"report exit_code {report['exit_code']}, process exit code {r.rc}")
    j.check((report['status'] == 'ok') == (r.rc == 0),
            f"report status {report['status']!r} with exit code {r.rc}")
    return r, report


def check_schema(report):
    j = J()
    try:
        import jsonschema
    except ImportError:
        raise j.CaseFailure('python module jsonschema missing: apt-get install python3-jsonschema') from None
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(report), key=lambda e: list(e.absolute_path))
    j.check(not errors, f'--json report does not match {SCHEMA.name}: ' + '; '.join(
        f"at {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:200]}" for e in errors[:5]))


def check_mapping(report, in_sd, rules):
    """The report's mapping covers every key of the (only) input state dict exactly once,
    old -> the key the rules give (None when dropped); its state_dicts entry has the counts.
    Returns the mapping as a dict old -> new."""
    j = J()
    paths = sorted({m['state_dict'] for m in report['mapping']})
    j.check(len(paths) == 1, f'mapping names state dicts {paths}, expected exactly one')
    olds = [m['old'] for m in report['mapping']]
    dup = sorted(k for k, n in collections.Counter(olds).items() if n > 1)
    j.check(not dup, f'mapping lists keys more than once: {dup[:5]}')
    j.check(sorted(olds) == sorted(in_sd),
            f'mapping keys differ from the input state dict: missing {sorted(set(in_sd) - set(olds))[:5]}, '
            f'unexpected {sorted(set(olds) - set(in_sd))[:5]}')
    got = {m['old']: m['new'] for m in report['mapping']}
    wrong = [(k, got[k], rules.key(k)) for k in in_sd if got[k] != rules.key(k)]
    j.check(not wrong, 'mapping differs from the rules: ' + ', '.join(
        f'{k!r} -> {g!r} (expected {w!r})' for k, g, w in wrong[:5]))
    sds = [s for s in report['state_dicts'] if s['name'] == paths[0]]
    j.check(len(sds) == 1, f"state_dicts has {len(sds)} entries for {paths[0]!r}")
    want = dict(keys=len(in_sd), dropped=sum(v is None for v in got.values()),
                renamed=sum(v is not None and v != k for k, v in got.items()),
                unchanged=sum(v == k for k, v in got.items()))
    have = {f: sds[0][f] for f in want}
    j.check(have == want, f'state_dicts counts {have}, expected {want}')
    return got


def user_rule_entries(report):
    return [e for e in report['rules'] if not e['origin'].startswith('preset ')]


def dry_run_json(ctx, name, *options, rules):
    """`--dry-run --json` on fixture NAME: exit 0, nothing written, a complete mapping equal
    to the rules' (checked), dry_run true, no verification, 0 bytes written."""
    j = J()
    inp = ctx.fixture(name)
    r, report = run_json(ctx, inp, ctx.out_dir / 'out.pth', *options, '--dry-run')
    j.check(r.rc == 0, f'exit code {r.rc}, expected 0')
    j.check(j.listdir(ctx.out_dir) == [], f'--dry-run left {j.listdir(ctx.out_dir)} in the output dir')
    j.check(report['dry_run'] is True and report['verification'] is None and report['bytes_written'] == 0,
            f"dry run report: dry_run {report['dry_run']}, verification {report['verification']}, "
            f"bytes_written {report['bytes_written']}")
    in_sd = j.find_model_state_dict(j.load(inp), cases.FIXTURES[name].sd_key)
    return report, check_mapping(report, in_sd, rules)


def data_records(path):
    import zipfile
    with zipfile.ZipFile(path) as z:
        return [n for n in z.namelist() if n.split('/')[-2:-1] == ['data']]


def rule_file_lines(path):
    return Path(path).read_text().splitlines()


def table_span(lines, needle):
    """1-based line numbers of the [[rule]] table whose body holds NEEDLE: from its header
    to its last line before the next table/blank line (an error may name either)."""
    at = next(i for i, line in enumerate(lines) if needle in line)
    start = max(i for i in range(at + 1) if lines[i].strip().startswith('[[rule]]'))
    end = at
    while end + 1 < len(lines) and lines[end + 1].strip() and not lines[end + 1].strip().startswith('['):
        end += 1
    return set(range(start + 1, end + 2))


# ----------------------------------------------------------------------------- bearpaw

def vgg_with_dp_features(model):
    import torch
    model.features = torch.nn.DataParallel(model.features)
    return model


@case
def bearpaw_drop_component_module_loads_strict(ctx):
    """bearpaw VGG (only `features` DataParallel): --drop-component module turns
    features.module.0.weight into features.0.weight; the full checkpoint keeps epoch/arch/
    best_acc/optimizer, and its state_dict loads strict into the plain VGGLike."""
    rules = RuleChain('unwrap', [('drop-component', 'module')])
    inp, out = cases.convert(ctx, 'bearpaw_vgg.pth', *rules.options())
    judge_rules(ctx, 'bearpaw_vgg.pth', inp, out, rules)


@case
def bearpaw_extract_drop_component_weights_only(ctx):
    """--extract --drop-component module: a bare state dict that loads with
    weights_only=True and strict into VGGLike."""
    rules = RuleChain('unwrap', [('drop-component', 'module')])
    inp, out = cases.convert(ctx, 'bearpaw_vgg.pth', '--extract', *rules.options())
    judge_rules(ctx, 'bearpaw_vgg.pth', inp, out, rules, extract=True)


@case
def bearpaw_default_preset_keeps_mid_key_module(ctx):
    """The default preset strips only a LEADING module.: features.module.0.weight stays,
    and the output still loads into the bearpaw model (features in DataParallel)."""
    j = J()
    inp, out = cases.convert(ctx, 'bearpaw_vgg.pth')
    judge_rules(ctx, 'bearpaw_vgg.pth', inp, out, RuleChain('unwrap'), model_wrapper=vgg_with_dp_features)
    keys = list(j.load(out)['state_dict'])
    j.check('features.module.0.weight' in keys and 'features.0.weight' not in keys,
            f'output keys {keys[:6]}...: the mid-key module. was touched')


# ----------------------------------------------------------------------------- presets

@case
def json_mapping_unwraps_orig_mod_and_module_in_any_order(ctx):
    """Default preset, --dry-run --json: _orig_mod.module.<k> and module._orig_mod.<k> both
    map to the plain TinyCNN key <k>."""
    from models import build
    j = J()
    plain = list(build('tiny_cnn').state_dict())
    for name in ('orig_mod_module.pth', 'module_orig_mod.pth'):
        _, mapping = dry_run_json(ctx, name, rules=RuleChain('unwrap'))
        j.check(list(mapping.values()) == plain, f'{name}: mapped keys {list(mapping.values())}, expected {plain}')


@case
def preset_ddp_strips_only_leading_module(ctx):
    """--preset ddp: module._orig_mod.<k> -> _orig_mod.<k>; _orig_mod.module.<k> unchanged."""
    j = J()
    _, m = dry_run_json(ctx, 'module_orig_mod.pth', '--preset', 'ddp', rules=RuleChain('ddp'))
    j.check(m['module._orig_mod.conv.weight'] == '_orig_mod.conv.weight', f'mapping {m}')
    _, m = dry_run_json(ctx, 'orig_mod_module.pth', '--preset', 'ddp', rules=RuleChain('ddp'))
    j.check(all(k == v for k, v in m.items()), f'mapping {m}')


@case
def preset_lightning_extract_loads_strict(ctx):
    """--preset lightning --extract on a Lightning checkpoint (state_dict keys model.<k>):
    a bare state dict, weights_only=True, strict into TinyCNN with its _metadata."""
    rules = RuleChain('lightning')
    inp, out = cases.convert(ctx, 'lightning.pth', '--preset', 'lightning', '--extract')
    judge_rules(ctx, 'lightning.pth', inp, out, rules, extract=True)


@case
def preset_lightning_keeps_checkpoint_structure(ctx):
    """--preset lightning without --extract: epoch, global_step, pytorch-lightning_version,
    optimizer_states, lr_schedulers, hparams survive; state_dict loads strict into TinyCNN."""
    j = J()
    inp, out = cases.convert(ctx, 'lightning.pth', '--preset', 'lightning')
    cmp = judge_rules(ctx, 'lightning.pth', inp, out, RuleChain('lightning'))
    j.check(any(p[:1] == ('optimizer_states',) for p, *_ in cmp.tensors), 'no optimizer tensors compared')
    full = j.load(out)
    j.check(full['global_step'] == 300 and full['pytorch-lightning_version'] == '2.1.0',
            f"global_step {full.get('global_step')!r}, version {full.get('pytorch-lightning_version')!r}")


@case
def preset_lightning_fabric_loads_strict(ctx):
    """--preset lightning on a Fabric state dict (_forward_module.model.<k>): strict into
    TinyCNN; the three '' candidates of _metadata resolve to TinyCNN's own (version 2)."""
    inp, out = cases.convert(ctx, 'lightning_fabric.pth', '--preset', 'lightning')
    judge_rules(ctx, 'lightning_fabric.pth', inp, out, RuleChain('lightning'))


@case
def preset_add_module_loads_into_dataparallel(ctx):
    """--preset add-module on a clean state dict: module.<k>, loads strict into
    nn.DataParallel(TinyCNN). (--add-prefix module.: add_prefix_module_loads_into_dataparallel.)"""
    import torch
    inp, out = cases.convert(ctx, 'clean_cpu.pth', '--preset', 'add-module')
    judge_rules(ctx, 'clean_cpu.pth', inp, out, RuleChain('add-module'),
                model_wrapper=torch.nn.DataParallel, ref_metadata=False)


@case
def list_presets_names_all_five(ctx):
    """--list-presets: exit 0, stdout names every preset."""
    j = J()
    r = run(ctx, '--list-presets')
    j.check(r.rc == 0, f'exit code {r.rc}, expected 0')
    missing = [p for p in PRESET_NAMES if not re.search(r'(?<![\w-])' + re.escape(p) + r'(?![\w-])', r.stdout)]
    j.check(not missing, f'--list-presets stdout does not name {missing}')


# ----------------------------------------------------------------------------- rule files

def backbone_rules():
    return RuleChain('unwrap', [('replace', 'backbone.', 'encoder.'), ('drop', r'^aux_head\.')])


@case
def rules_file_backbone_to_encoder_loads_strict(ctx):
    """--rules backbone_to_encoder.toml: backbone. -> encoder., aux_head.* dropped; strict
    into EncoderNet, which has no aux head."""
    j = J()
    rules_file = ctx.fixture(BACKBONE_RULES)
    inp, out = cases.convert(ctx, 'backbone_aux.pth', '--rules', rules_file)
    cmp = judge_rules(ctx, 'backbone_aux.pth', inp, out, backbone_rules())
    j.check(sorted(k for _, k in cmp.dropped) == ['aux_head.bias', 'aux_head.weight'],
            f'dropped {cmp.dropped}')


@case
def rules_file_json_reports_drops_and_matches(ctx):
    """--rules FILE --json: the mapping gives aux_head.* new null and backbone.* encoder.*,
    the file's rules report FILE:LINE origins and their matches (replace 7, drop 2)."""
    j = J()
    rules_file = ctx.fixture(BACKBONE_RULES)
    inp = ctx.fixture('backbone_aux.pth')
    out = ctx.out_dir / 'out.pth'
    r, report = run_json(ctx, inp, out, '--rules', rules_file)
    j.check(r.rc == 0, f'exit code {r.rc}, expected 0')
    j.check(j.listdir(ctx.out_dir) == ['out.pth'], f'output dir holds {j.listdir(ctx.out_dir)}')
    in_sd = j.load(inp)
    mapping = check_mapping(report, in_sd, backbone_rules())
    j.check(mapping['aux_head.weight'] is None and mapping['backbone.1.running_var'] == 'encoder.1.running_var',
            f'mapping {mapping}')
    entries = user_rule_entries(report)
    j.check(len(entries) == 2, f'rules from the file: {entries}, expected 2 (replace, drop)')
    lines = rule_file_lines(rules_file)
    for e, needle, kind, n in ((entries[0], 'replace = ', 'replace', 7), (entries[1], 'drop = ', 'drop', 2)):
        j.check(kind in e['rule'], f'rule {e} is not the file\'s {kind} rule')
        j.check(e['matches'] == n, f"rule {e['rule']!r}: matches {e['matches']}, expected {n}")
        span = table_span(lines, needle)
        m = re.fullmatch(r'(.*):(\d+)', e['origin'])
        j.check(m and m.group(1).endswith(rules_file.name) and int(m.group(2)) in span,
                f"rule {e['rule']!r}: origin {e['origin']!r}, expected {rules_file.name}:<one of {sorted(span)}>")
    j.check(report['verification'] is not None and report['bytes_written'] == out.stat().st_size,
            f"verification {report['verification']}, bytes_written {report['bytes_written']} "
            f'(file has {out.stat().st_size})')


@case
def rules_file_errors_all_reported_exit2(ctx):
    """errors.toml holds four errors: every one reported at once, one 'ckpt-convert: error:
    errors.toml:<line>: ...' line each (unknown kind with 'did you mean', replace with one
    string, invalid regex naming the pattern, two kinds in one table); exit 2; no OUT."""
    j = J()
    rules_file = ctx.fixture(ERRORS_RULES)
    inp = ctx.fixture('dp_tiny_cnn.pth')
    r = run(ctx, inp, ctx.out_dir / 'out.pth', '--rules', rules_file)
    j.check(r.rc == 2, f'exit code {r.rc}, expected 2 (usage: bad rule file)')
    j.check(j.listdir(ctx.out_dir) == [], f'output dir holds {j.listdir(ctx.out_dir)}')
    errs = [line for line in r.stderr.splitlines() if line.strip()]
    j.check(all(line.startswith(j.ERROR_PREFIX) for line in errs),
            f'stderr has lines not starting with {j.ERROR_PREFIX!r}: '
            f'{[line for line in errs if not line.startswith(j.ERROR_PREFIX)][:3]}')
    lines = rule_file_lines(rules_file)
    expected = [   # (text in the table, what the error line must also say)
        ('strp = ', ["did you mean 'strip'"]),
        ('replace = ["backbone."]', ['replace']),
        ("regex = ['a(b'", ['a(b', 'missing )']),
        ('keep = ', ['strip', 'keep']),
    ]
    j.check(len(errs) == len(expected),
            f'{len(errs)} error line(s), expected {len(expected)} (one per error in {rules_file.name})')
    where = re.compile(re.escape(rules_file.name) + r':(\d+):')
    found = {}
    for line in errs:
        m = where.search(line)
        j.check(m, f'error line does not name {rules_file.name}:<line>: {line!r}')
        found.setdefault(int(m.group(1)), []).append(line)
    for needle, words in expected:
        span = table_span(lines, needle)
        hits = [line for n in sorted(span) for line in found.get(n, [])]
        j.check(len(hits) == 1, f'expected one error at {rules_file.name}:<one of {sorted(span)}> '
                                f'(the table holding {needle!r}), got {len(hits)}')
        missing = [w for w in words if w.lower() not in hits[0].lower()]
        j.check(not missing, f'error line {hits[0]!r} does not say {missing}')


@case
def rules_file_preset_overridden_by_command_line(ctx):
    """The file says preset = "unwrap"; --preset ddp on the command line wins:
    module._orig_mod.<k> -> _orig_mod.<k> (unwrap would give <k>)."""
    j = J()
    rules_file = ctx.fixture(BACKBONE_RULES)
    rules = RuleChain('ddp', backbone_rules().user)
    report, m = dry_run_json(ctx, 'module_orig_mod.pth', '--rules', rules_file, '--preset', 'ddp', rules=rules)
    j.check(m['module._orig_mod.conv.weight'] == '_orig_mod.conv.weight', f'mapping {m}')
    presets = sorted({e['origin'] for e in report['rules'] if e['origin'].startswith('preset ')})
    j.check(presets == ['preset ddp'], f'preset rules in the report come from {presets}, expected preset ddp')


@case
def rules_apply_in_command_line_order(ctx):
    """--rules FILE takes its place among the command-line rules: `--replace backbone.
    trunk. --rules F` gives trunk.*, `--rules F --replace backbone. trunk.` gives encoder.*."""
    j = J()
    rules_file = ctx.fixture(BACKBONE_RULES)
    file_rules = backbone_rules().user
    first = RuleChain('unwrap', [('replace', 'backbone.', 'trunk.')] + file_rules)
    _, m = dry_run_json(ctx, 'backbone_aux.pth', '--replace', 'backbone.', 'trunk.', '--rules', rules_file,
                        rules=first)
    j.check(m['backbone.0.weight'] == 'trunk.0.weight', f"backbone.0.weight -> {m['backbone.0.weight']}")
    last = RuleChain('unwrap', file_rules + [('replace', 'backbone.', 'trunk.')])
    _, m = dry_run_json(ctx, 'backbone_aux.pth', '--rules', rules_file, '--replace', 'backbone.', 'trunk.',
                        rules=last)
    j.check(m['backbone.0.weight'] == 'encoder.0.weight', f"backbone.0.weight -> {m['backbone.0.weight']}")


# ----------------------------------------------------------------------------- rule kinds

@case
def regex_renames_with_groups(ctx):
    r"""--regex '(.*)\.running_(mean|var)' '\1.stats_\2' (after the preset: module. is gone)
    and '\g<0>' for the whole match: the mapping shows bn.stats_mean, classifier.fc.weight ..."""
    j = J()
    rules = RuleChain('unwrap', [('regex', r'(.*)\.running_(mean|var)', r'\1.stats_\2'),
                                 ('regex', r'^fc\.(weight|bias)$', r'classifier.\g<0>')])
    report, m = dry_run_json(ctx, 'dp_tiny_cnn.pth', *rules.options(), rules=rules)
    j.check(m['module.bn.running_var'] == 'bn.stats_var' and m['module.fc.bias'] == 'classifier.fc.bias',
            f'mapping {m}')
    counts = [e['matches'] for e in user_rule_entries(report)]
    j.check(counts == [2, 2], f'user rule matches {counts}, expected [2, 2]')


@case
def regex_replaces_every_match_anywhere_as_re_sub(ctx):
    r"""--regex '_(\w)' '\1', unanchored: as Python's re.sub it rewrites every match anywhere
    in a key, backbone.1.num_batches_tracked -> backbone.1.numbatchestracked (twice, mid-key);
    the mapping of every key is re.sub's, and the rule counts the 5 keys it changed."""
    j = J()
    pattern, repl = r'_(\w)', r'\1'
    rules = RuleChain('unwrap', [('regex', pattern, repl)])
    report, m = dry_run_json(ctx, 'backbone_aux.pth', *rules.options(), rules=rules)
    want = {k: re.sub(pattern, repl, k) for k in m}
    j.check(m == want, f'mapping {m}, re.sub gives {want}')
    j.check(m['backbone.1.num_batches_tracked'] == 'backbone.1.numbatchestracked', f'mapping {m}')
    counts = [e['matches'] for e in user_rule_entries(report)]
    changed = sum(v != k for k, v in want.items())
    j.check(changed == 5 and counts == [changed], f'user rule matches {counts}, expected [{changed}]')


@case
def regex_anchored_matches_only_at_the_anchor(ctx):
    """--regex '^running_mean' 'X': running_mean stands only mid-key (bn.running_mean), so
    the anchored pattern matches no key: nothing changes beyond the preset, the rule reports
    0 matches and a warning."""
    j = J()
    rules = RuleChain('unwrap', [('regex', '^running_mean', 'X')])
    report, _ = dry_run_json(ctx, 'dp_tiny_cnn.pth', *rules.options(), rules=rules)
    counts = [e['matches'] for e in user_rule_entries(report)]
    j.check(counts == [0], f'user rule matches {counts}, expected [0]')
    j.check(report['warnings'], 'no warning in the report for a rule that matched nothing')


@case
def regex_dollar_group_refused_exit2(ctx):
    r"""--regex '(conv)\.' '$1_': `$1` is not Python's syntax (re.sub would copy it literally):
    exit 2, one error line naming the replacement and saying to write \1; no OUT."""
    j = J()
    inp = ctx.fixture('clean_cpu.pth')
    r = run(ctx, inp, ctx.out_dir / 'out.pth', '--regex', r'(conv)\.', '$1_')
    j.check(r.rc == 2, f'exit code {r.rc}, expected 2 (usage)')
    j.check(j.listdir(ctx.out_dir) == [], f'output dir holds {j.listdir(ctx.out_dir)}')
    j.check_one_error_line(r, must_contain=['--regex', "'$1_'", r'write \1'])


@case
def keep_leaves_only_matching_keys(ctx):
    r"""--keep '^fc\.' (applied after the preset strips module.): only fc.weight and
    fc.bias remain, bitwise equal, in 2 data records."""
    j = J()
    rules = RuleChain('unwrap', [('keep', r'^fc\.')])
    inp, out = cases.convert(ctx, 'dp_tiny_cnn.pth', *rules.options())
    cmp = rule_comparison(rules)
    out_sd = load_output(ctx, cases.FIXTURES['dp_tiny_cnn.pth'], inp, out, bare=True)
    cmp.compare(j.load(inp), out_sd)
    cmp.check_sharing()
    j.check(list(out_sd) == ['fc.weight', 'fc.bias'], f'output keys {list(out_sd)}')
    j.check(len(data_records(out)) == 2, f'output has {len(data_records(out))} data records, expected 2')


@case
def drop_removes_entries_and_storages(ctx):
    r"""--drop '^aux_head\.': the entries are gone from the output and so are their
    storages (2 data records fewer); everything else is bitwise equal."""
    j = J()
    rules = RuleChain('unwrap', [('drop', r'^aux_head\.')])
    inp, out = cases.convert(ctx, 'backbone_aux.pth', *rules.options())
    out_sd = load_output(ctx, cases.FIXTURES['backbone_aux.pth'], inp, out, bare=True)
    cmp = rule_comparison(rules)
    cmp.compare(j.load(inp), out_sd)
    cmp.check_sharing()
    j.check(not any(k.startswith('aux_head.') for k in out_sd), f'output keys {list(out_sd)}')
    n_in, n_out = len(data_records(inp)), len(data_records(out))
    j.check(n_out == n_in - 2, f'output has {n_out} data records, input {n_in}: expected 2 fewer')


@case
def drop_keeps_storage_shared_with_kept_tensor(ctx):
    r"""--drop '^lm_head\.weight$' on tied weights: embed.weight still needs the shared
    storage, so the output has as many data records as the input."""
    j = J()
    rules = RuleChain('unwrap', [('drop', r'^lm_head\.weight$')])
    inp, out = cases.convert(ctx, 'tied_weights.pth', *rules.options())
    out_sd = load_output(ctx, cases.FIXTURES['tied_weights.pth'], inp, out, bare=True)
    cmp = rule_comparison(rules)
    cmp.compare(j.load(inp), out_sd)
    cmp.check_sharing()
    j.check('lm_head.weight' not in out_sd and 'embed.weight' in out_sd, f'output keys {list(out_sd)}')
    n_in, n_out = len(data_records(inp)), len(data_records(out))
    j.check(n_out == n_in, f'output has {n_out} data records, input {n_in}: the shared storage was dropped')


# ----------------------------------------------------------------------------- guarantees

@case
def collisions_all_listed_exit1(ctx):
    r"""--regex '^(conv|fc)\.(weight|bias)$' 'w.\2': two pairs collide (conv.weight/fc.weight
    -> w.weight, conv.bias/fc.bias -> w.bias): exit 1, 'collide', both pairs named, no OUT."""
    j = J()
    inp = ctx.fixture('clean_cpu.pth')
    r = run(ctx, inp, ctx.out_dir / 'out.pth', '--regex', r'^(conv|fc)\.(weight|bias)$', r'w.\2')
    j.check(r.rc == 1, f'exit code {r.rc}, expected 1')
    j.check(j.listdir(ctx.out_dir) == [], f'output dir holds {j.listdir(ctx.out_dir)}')
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    j.check(lines and all(line.startswith(j.ERROR_PREFIX) for line in lines),
            f'stderr lines must all start with {j.ERROR_PREFIX!r}')
    j.check('collide' in r.stderr, "stderr does not say 'collide'")
    tok = r"(?<![\w.]){}(?![\w.])"
    for a, b, new in (('conv.weight', 'fc.weight', 'w.weight'), ('conv.bias', 'fc.bias', 'w.bias')):
        j.check(any(all(re.search(tok.format(re.escape(k)), line) for k in (a, b, new)) for line in lines),
                f'no error line names the colliding pair {a!r}, {b!r} -> {new!r}')


@case
def empty_key_refused_exit1(ctx):
    """--strip fc.bias makes the key fc.bias empty: exit 1, the key named, no OUT."""
    j = J()
    inp = ctx.fixture('clean_cpu.pth')
    r = run(ctx, inp, ctx.out_dir / 'out.pth', '--strip', 'fc.bias')
    j.check(r.rc == 1, f'exit code {r.rc}, expected 1')
    j.check(j.listdir(ctx.out_dir) == [], f'output dir holds {j.listdir(ctx.out_dir)}')
    j.check_one_error_line(r, must_contain=['fc.bias'], keywords=['empty'])


@case
def unmatched_rule_warns_exit0(ctx):
    """--strip nothing. matches no key: a 'ckpt-convert: warning: ' line naming it, exit 0,
    and the output is the default conversion."""
    j = J()
    rules = RuleChain('unwrap', [('strip', 'nothing.')])
    inp, out = cases.convert(ctx, 'dp_tiny_cnn.pth', *rules.options())
    warnings = [line for line in ctx.last.stderr.splitlines() if line.startswith(WARNING_PREFIX)]
    j.check(any('nothing.' in line for line in warnings),
            f"no {WARNING_PREFIX!r} line naming 'nothing.' (warnings: {warnings})")
    judge_rules(ctx, 'dp_tiny_cnn.pth', inp, out, rules)


@case
def unmatched_rule_require_match_exit1(ctx):
    """--strip nothing. --require-match: exit 1, an error naming the rule, no OUT."""
    j = J()
    inp = ctx.fixture('dp_tiny_cnn.pth')
    r = run(ctx, inp, ctx.out_dir / 'out.pth', '--strip', 'nothing.', '--require-match')
    j.check(r.rc == 1, f'exit code {r.rc}, expected 1')
    j.check(j.listdir(ctx.out_dir) == [], f'output dir holds {j.listdir(ctx.out_dir)}')
    errs = [line for line in r.stderr.splitlines() if line.startswith(j.ERROR_PREFIX)]
    j.check(any('nothing.' in line for line in errs), f"no error line names the rule 'nothing.' ({errs})")


@case
def preset_rules_never_warn(ctx):
    """The preset's rules matching nothing (a clean file) is no warning, even with
    --require-match: exit 0, no warning line, the file unchanged in keys."""
    j = J()
    inp, out = cases.convert(ctx, 'clean_cpu.pth', '--require-match')
    j.check(WARNING_PREFIX not in ctx.last.stderr, f'stderr has a warning: {ctx.last.stderr.strip()[:300]}')
    judge_rules(ctx, 'clean_cpu.pth', inp, out, RuleChain('unwrap'))


# ----------------------------------------------------------------------------- --json, --dry-run, summary

@case
def json_report_valid_on_success(ctx):
    """--json on a conversion: schema-valid, status ok, every key mapped once, counts,
    bytes_written = size of OUT, verification on cpu; the output itself is right."""
    j = J()
    inp = ctx.fixture('dp_tiny_cnn.pth')
    out = ctx.out_dir / 'out.pth'
    r, report = run_json(ctx, inp, out)
    j.check(r.rc == 0, f'exit code {r.rc}, expected 0')
    j.check(report['error'] is None and report['dry_run'] is False and report['format'] == 'zip',
            f"error {report['error']!r}, dry_run {report['dry_run']}, format {report['format']!r}")
    check_mapping(report, j.load(inp), RuleChain('unwrap'))
    j.check(out.is_file() and report['bytes_written'] == out.stat().st_size,
            f"bytes_written {report['bytes_written']}, OUT {out.stat().st_size if out.is_file() else 'missing'}")
    v = report['verification']
    j.check(v is not None and v['device'] == 'cpu' and v['tensors'] == 9, f'verification {v}')
    j.check(report['tensors'] == 9, f"tensors {report['tensors']}, expected 9")
    judge_rules(ctx, 'dp_tiny_cnn.pth', inp, out, RuleChain('unwrap'))


@case
def json_report_valid_on_dry_run(ctx):
    """--json --dry-run: schema-valid, dry_run true, no verification, nothing written,
    every key mapped once."""
    dry_run_json(ctx, 'dp_tiny_cnn.pth', rules=RuleChain('unwrap'))


@case
def json_report_valid_on_error(ctx):
    """--json on a truncated input: still one schema-valid object, status error,
    exit_code 1, the error text; nothing written."""
    j = J()
    inp = ctx.fixture('bad/truncated_half.pth')
    r, report = run_json(ctx, inp, ctx.out_dir / 'out.pth')
    j.check(r.rc == 1, f'exit code {r.rc}, expected 1')
    j.check(report['status'] == 'error' and report['exit_code'] == 1, f"status {report['status']!r}")
    j.check(isinstance(report['error'], str) and 'truncated' in report['error'].lower(),
            f"error {report['error']!r} does not give the cause (truncated)")
    j.check(report['bytes_written'] == 0 and j.listdir(ctx.out_dir) == [],
            f"bytes_written {report['bytes_written']}, output dir {j.listdir(ctx.out_dir)}")


@case
def dry_run_prints_diff_lines(ctx):
    """--dry-run with the backbone rule file: a '- old' line then a '+ new' line for each
    renamed key, '- old ... (dropped)' for each dropped one, unchanged keys not shown as
    removed; nothing written."""
    j = J()
    rules_file = ctx.fixture(BACKBONE_RULES)
    inp = ctx.fixture('backbone_aux.pth')
    r = run(ctx, inp, ctx.out_dir / 'out.pth', '--rules', rules_file, '--dry-run')
    j.check(r.rc == 0, f'exit code {r.rc}, expected 0')
    j.check(j.listdir(ctx.out_dir) == [], f'--dry-run left {j.listdir(ctx.out_dir)} in the output dir')
    lines = [line.strip() for line in r.stdout.splitlines() if line.strip()]
    rules = backbone_rules()

    def minus(k):
        return [i for i, line in enumerate(lines) if re.match(r'-\s*' + re.escape(k) + r'(\s|$)', line)]
    for k in j.load(inp):
        new = rules.key(k)
        at = minus(k)
        if new is None:
            j.check(len(at) == 1 and '(dropped)' in lines[at[0]], f"no '- {k} (dropped)' line")
        elif new != k:
            j.check(len(at) == 1, f"{len(at)} '- {k}' line(s), expected 1")
            nxt = lines[at[0] + 1] if at[0] + 1 < len(lines) else ''
            j.check(re.fullmatch(r'\+\s*' + re.escape(new) + r'(\s.*)?', nxt),
                    f"'- {k}' is followed by {nxt!r}, expected '+ {new}'")
        else:
            j.check(not at, f"unchanged key {k} shown as '- {k}'")


@case
def summary_on_stderr_unless_quiet(ctx):
    """Without -q stderr summarizes (renamed, dropped); with -q stderr is empty."""
    j = J()
    rules_file = ctx.fixture(BACKBONE_RULES)
    inp = ctx.fixture('backbone_aux.pth')
    r = run(ctx, inp, ctx.out_dir / 'a.pth', '--rules', rules_file)
    j.check(r.rc == 0, f'exit code {r.rc}, expected 0')
    for word in ('renamed', 'dropped'):
        j.check(re.search(word, r.stderr, re.I), f'the summary on stderr does not mention {word!r}')
    r = run(ctx, inp, ctx.out_dir / 'b.pth', '--rules', rules_file, '-q')
    j.check(r.rc == 0, f'exit code {r.rc}, expected 0')
    j.check(r.stderr.strip() == '', f'-q: stderr is not empty: {r.stderr.strip()[:300]}')
