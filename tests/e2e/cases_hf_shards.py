"""ckpt-convert e2e cases for HuggingFace sharded checkpoints (issue 13 item 3, "HF shards in").

Registered in the registry of cases.py (cases.py imports this module). The shards are
written here: safetensors ones by cases_safetensors.write_safetensors (the Python
`safetensors` package is not installed beside the judge's torch), .bin ones by torch.save
of each shard's dict, and the index as huggingface_hub writes it (`json.dump(indent=2)`, in
state-dict order) with `metadata.total_size`.

The contract judged here:
- a folder holding `model.safetensors.index.json` (or the index file itself) converts to
  one torch zip: torch.load(weights_only=True) gives the merged state dict in weight_map
  order, equal tensors of the same dtypes, and load_state_dict(strict=True) works.
- `pytorch_model-0000X-of-0000N.bin` shards (torch.save) convert too; a storage shared
  inside a shard stays shared; with both indexes in the folder the safetensors one is read.
- rules apply across shards; `inspect` and `check` read it (format `hf-index`).
- hostile indexes are refused, each its own case: exit 1, one error line naming the index
  file, nothing written.
- shard files the index does not name, tensors a shard holds that it does not list and a
  wrong total_size are warnings on stderr (and in convert's --json `warnings`).
"""
import json
import os
import sys
from pathlib import Path

sys.dont_write_bytecode = True     # keep __pycache__ out of the source tree
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from judge import host_cases  # noqa: E402
import cases_safetensors as st  # noqa: E402

cases = host_cases()

ST_INDEX = 'model.safetensors.index.json'
BIN_INDEX = 'pytorch_model.bin.index.json'


def case(fn):
    if fn.__name__ in cases.CASES:
        raise SystemExit(f'cases_hf_shards.py: case {fn.__name__} is already registered')
    return cases.case(fn)


J = st.J


def split(state_dict, n):
    """STATE_DICT's keys in order, cut into N runs of near-equal length."""
    keys = list(state_dict)
    size = -(-len(keys) // n)
    return [keys[i:i + size] for i in range(0, len(keys), size)]


def storage_total(state_dict):
    """metadata.total_size as huggingface_hub computes it: each storage's bytes once."""
    seen, total = set(), 0
    for t in state_dict.values():
        storage = t.storage()
        key = (storage.data_ptr(), storage.nbytes())
        if key not in seen:
            seen.add(key)
            total += storage.nbytes()
    return total


def write_index(path, weight_map, total_size=None):
    index = {'metadata': {'total_size': total_size}, 'weight_map': weight_map}
    if total_size is None:
        del index['metadata']
    Path(path).write_text(json.dumps(index, indent=2))
    return Path(path)


def write_st_shards(folder, state_dict, n=3, stem='model', total_size=True):
    """Safetensors shards `<stem>-0000i-of-0000n.safetensors` and their index in FOLDER;
    returns the index path and the keys in weight_map order."""
    folder.mkdir(parents=True, exist_ok=True)
    runs = split(state_dict, n)
    weight_map = {}
    for i, keys in enumerate(runs):
        name = f'{stem}-{i + 1:05d}-of-{len(runs):05d}.safetensors'
        st.write_safetensors(folder / name, {k: state_dict[k] for k in keys}, metadata={'format': 'pt'})
        weight_map.update({k: name for k in keys})
    total = storage_total(state_dict) if total_size else None
    return write_index(folder / ST_INDEX, weight_map, total), list(weight_map)


def write_bin_shards(folder, state_dict, n=3, runs=None, zip_format=True):
    """torch.save shards `pytorch_model-0000i-of-0000n.bin` (zip, or with ZIP_FORMAT false
    the legacy format) and their index in FOLDER."""
    import torch
    folder.mkdir(parents=True, exist_ok=True)
    runs = runs or split(state_dict, n)
    weight_map = {}
    for i, keys in enumerate(runs):
        name = f'pytorch_model-{i + 1:05d}-of-{len(runs):05d}.bin'
        torch.save({k: state_dict[k] for k in keys}, folder / name,
                   _use_new_zipfile_serialization=zip_format)
        weight_map.update({k: name for k in keys})
    return write_index(folder / BIN_INDEX, weight_map, storage_total(state_dict)), list(weight_map)


def converted(ctx, inp, *args):
    j = J()
    out = ctx.out_dir / 'out.pth'
    r = ctx.run(inp, out, *args)
    j.check_clean_exit(r)
    j.check(r.rc == 0, f'exit code {r.rc}, expected 0')
    j.check('warning' not in r.stderr, f'unexpected warning: {r.stderr[:400]}')
    return out


@case
def hf_shards_safetensors_folder_converts_loads_strict(ctx):
    """A folder of 3 safetensors shards and model.safetensors.index.json (total_size right):
    one .pth that torch.load(weights_only=True) reads as the merged state dict in weight_map
    order, and load_state_dict(strict=True) into the model works."""
    import torch
    model = st.mixed_model()
    sd = st.mixed_state_dict(model)
    folder = ctx.in_dir / 'sharded'
    _, order = write_st_shards(folder, sd)
    out = converted(ctx, folder)
    loaded = st.check_same_state_dict(out, sd, order)
    fresh = st.mixed_model()
    fresh.load_state_dict(loaded, strict=True)
    J().check(torch.equal(fresh.bn.running_mean, model.bn.running_mean), 'running_mean not loaded')


@case
def hf_shards_safetensors_index_path_converts_in_weight_map_order(ctx):
    """The index file given as IN, its weight_map in an order no shard has (reversed):
    the output's keys follow the weight_map."""
    sd = st.mixed_state_dict(st.mixed_model())
    folder = ctx.in_dir / 'sharded'
    index, order = write_st_shards(folder, sd)
    data = json.loads(index.read_text())
    reordered = dict(reversed(list(data['weight_map'].items())))
    data['weight_map'] = reordered
    index.write_text(json.dumps(data, indent=2))
    out = converted(ctx, index)
    st.check_same_state_dict(out, sd, list(reordered))


@case
def hf_shards_into_a_folder_named_pth(ctx):
    """OUT an existing folder: a shard folder IN becomes OUT/<folder>.pth, its index IN
    OUT/model.pth (never a torch file named .json)."""
    sd = small_sd()
    folder = ctx.in_dir / 'sharded'
    index, order = write_st_shards(folder, sd)
    j = J()
    for inp, name in ((folder, 'sharded.pth'), (index, 'model.pth')):
        r = ctx.run(inp, ctx.out_dir)
        j.check_clean_exit(r)
        j.check(r.rc == 0, f'exit code {r.rc}, expected 0')
        st.check_same_state_dict(ctx.out_dir / name, sd, order)
    j.check(j.listdir(ctx.out_dir) == ['model.pth', 'sharded.pth'], f'output dir holds {j.listdir(ctx.out_dir)}')


@case
def hf_shards_bin_folder_converts_keeping_shared_storage(ctx):
    """pytorch_model-0000X-of-00003.bin shards written by torch.save: converts; TinyLM's tied
    lm_head.weight / embed.weight (one storage, in one shard) stay one storage; strict load."""
    import torch
    from models import TinyLM
    j = J()
    torch.manual_seed(13)
    model = TinyLM()
    sd = model.state_dict()
    keys = list(sd)
    runs = [['embed.weight', 'lm_head.weight'], [k for k in keys if k.startswith('norm.')]]
    folder = ctx.in_dir / 'sharded'
    _, order = write_bin_shards(folder, sd, runs=runs)
    out = converted(ctx, folder)
    loaded = st.check_same_state_dict(out, dict(sd), order)
    j.check(loaded['lm_head.weight'].data_ptr() == loaded['embed.weight'].data_ptr(),
            "lm_head.weight does not share embed.weight's storage")
    TinyLM().load_state_dict(loaded, strict=True)


@case
def hf_shards_legacy_bin_shards_convert(ctx):
    """.bin shards in torch's legacy format (_use_new_zipfile_serialization=False) convert;
    strict load into the model."""
    sd = st.mixed_state_dict(st.mixed_model())
    folder = ctx.in_dir / 'sharded'
    _, order = write_bin_shards(folder, sd, zip_format=False)
    loaded = st.check_same_state_dict(converted(ctx, folder), sd, order)
    st.mixed_model().load_state_dict(loaded, strict=True)


@case
def hf_shards_both_indexes_safetensors_chosen(ctx):
    """A folder with both indexes (the .bin shards hold zeros): the safetensors one is read,
    as transformers does."""
    import torch
    sd = st.mixed_state_dict(st.mixed_model())
    folder = ctx.in_dir / 'sharded'
    _, order = write_st_shards(folder, sd)
    write_bin_shards(folder, {k: torch.zeros_like(v) for k, v in sd.items()})
    out = converted(ctx, folder)
    st.check_same_state_dict(out, sd, order)


@case
def hf_shards_rules_apply_across_shards(ctx):
    """--regex ^ module. renames the keys of every shard."""
    sd = st.mixed_state_dict(st.mixed_model())
    folder = ctx.in_dir / 'sharded'
    _, order = write_st_shards(folder, sd)
    out = converted(ctx, folder, '--regex', '^', 'module.')
    st.check_same_state_dict(out, {'module.' + k: v for k, v in sd.items()},
                             ['module.' + k for k in order])


@case
def hf_shards_inspect_and_check_read_it(ctx):
    """inspect (text and --json, valid against docs/inspect.schema.json) says hf-index and
    counts every shard's tensors; check --json passes, format hf-index; convert --dry-run
    --json is valid against docs/report.schema.json."""
    j = J()
    sd = st.mixed_state_dict(st.mixed_model())
    folder = ctx.in_dir / 'sharded'
    write_st_shards(folder, sd)
    r = ctx.run('inspect', folder)
    j.check_clean_exit(r)
    j.check(r.rc == 0, f'exit code {r.rc}, expected 0')
    j.check(f'{folder}: hf-index checkpoint' in r.stdout, 'text report does not say hf-index')
    j.check(f'{len(sd)} tensors in {len(sd)} storages' in r.stdout, 'text report miscounts')
    r = ctx.run('inspect', folder, '--json')
    j.check(r.rc == 0, f'exit code {r.rc}, expected 0')
    report = json.loads(r.stdout)
    j.check_schema(report, 'inspect.schema.json')
    j.check(report['format'] == 'hf-index', f"format {report['format']!r}")
    j.check(report['tensors'] == len(sd), f"tensors {report['tensors']}, expected {len(sd)}")
    j.check('3 safetensors shards' in report['torch_hint'], f"torch_hint {report['torch_hint']!r}")
    st.check_passes(ctx, folder, 'hf-index')
    r = ctx.run(folder, '--dry-run', '--json')
    j.check(r.rc == 0, f'exit code {r.rc}, expected 0')
    report = json.loads(r.stdout)
    j.check_schema(report, 'report.schema.json')
    j.check(report['format'] == 'hf-index', f"format {report['format']!r}")
    j.check(j.listdir(ctx.out_dir) == [], f'output dir holds {j.listdir(ctx.out_dir)}')


@case
def hf_shards_warns_on_unlisted_files_tensors_and_wrong_total_size(ctx):
    """A stale shard file the index does not name, a tensor a shard holds that the index
    does not list, and a total_size off by one: converted (the unlisted tensor left out),
    each one warning on stderr naming what, and in --json's warnings."""
    import torch
    j = J()
    sd = st.mixed_state_dict(st.mixed_model())
    folder = ctx.in_dir / 'sharded'
    index, order = write_st_shards(folder, sd)
    data = json.loads(index.read_text())
    data['metadata']['total_size'] += 1
    first = data['weight_map'][order[0]]
    del data['weight_map'][order[0]]
    index.write_text(json.dumps(data, indent=2))
    st.write_safetensors(folder / 'model-00004-of-00004.safetensors', {'stale': torch.zeros(2)})
    out = ctx.out_dir / 'out.pth'
    r = ctx.run(folder, out, '--json')
    j.check_clean_exit(r)
    j.check(r.rc == 0, f'exit code {r.rc}, expected 0')
    warnings = [line for line in r.stderr.splitlines() if 'warning' in line]
    j.check(len(warnings) == 3, f'expected 3 warning lines, got: {r.stderr[:1200]}')
    stderr = r.stderr
    j.check("'model-00004-of-00004.safetensors'" in stderr and 'does not name' in stderr,
            'no warning about the unnamed shard file')
    j.check(f"shard '{first}' holds 1 tensor(s)" in stderr and f"'{order[0]}'" in stderr,
            'no warning about the unlisted tensor')
    j.check('metadata.total_size is' in stderr, 'no warning about total_size')
    report = json.loads(r.stdout)
    j.check_schema(report, 'report.schema.json')
    j.check(len(report['warnings']) == 3, f"report warnings: {report['warnings']}")
    st.check_same_state_dict(out, {k: sd[k] for k in order[1:]}, order[1:])


@case
def hf_shards_corrupt_bin_shard_named_in_messages(ctx):
    """A flipped byte in a .bin shard's storage record: check and convert fail naming the
    shard file and its record (its CRC-32 no longer holds), nothing written."""
    import zipfile
    j = J()
    folder = ctx.in_dir / 'sharded'
    write_bin_shards(folder, small_sd())
    shard = folder / 'pytorch_model-00001-of-00003.bin'
    raw = bytearray(shard.read_bytes())
    with zipfile.ZipFile(shard) as z:
        [info] = [i for i in z.infolist() if i.filename.endswith('/data/0')]
    start = info.header_offset + 30 + int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], 'little') \
        + int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], 'little')
    raw[start + 5] ^= 0xff
    shard.write_bytes(bytes(raw))
    record = f'{shard}:pytorch_model-00001-of-00003/data/0'
    r = ctx.run('check', folder)
    j.check_clean_exit(r)
    j.check(r.rc == 3, f'exit code {r.rc}, expected 3')
    j.check(f'record {record}: its bytes do not match the CRC-32' in r.stderr + r.stdout,
            'check does not name the shard and record')
    r = ctx.run(folder, ctx.out_dir / 'out.pth')
    j.check_clean_exit(r)
    j.check(r.rc == 1, f'exit code {r.rc}, expected 1')
    j.check_one_error_line(r, must_contain=(f'{record}: CRC-32 mismatch',))
    j.check(j.listdir(ctx.out_dir) == [], f'output dir holds {j.listdir(ctx.out_dir)}')


# ----------------------------------------------------------------------------- hostile


def refused_index(ctx, inp, index, *must_contain):
    """IN refused: exit 1, one error line naming INDEX (and MUST_CONTAIN), nothing written."""
    st.refused(ctx, inp, *must_contain, named=index)


def small_sd():
    import torch
    return {'a.weight': torch.arange(6, dtype=torch.float32).reshape(2, 3),
            'b.bias': torch.ones(3), 'c.scale': torch.tensor(2.0)}


def hostile_folder(ctx):
    """A good 3-shard safetensors folder to spoil; returns (folder, index, index data)."""
    folder = ctx.in_dir / 'sharded'
    index, _ = write_st_shards(folder, small_sd())
    return folder, index, json.loads(index.read_text())


def spoil(index, data):
    index.write_text(json.dumps(data, indent=2))
    return index


def hostile(fn):
    """One case per hostile index: `hf_shards_refuses_<name>`."""
    name = 'hf_shards_refuses_' + fn.__name__

    def run(ctx):
        fn(ctx)
    run.__name__ = name
    run.__doc__ = fn.__doc__
    return case(run)


@hostile
def shard_path_dotdot(ctx):
    """A shard named ../x.safetensors (the file exists outside the folder)."""
    folder, index, data = hostile_folder(ctx)
    (folder.parent / 'x.safetensors').write_bytes((folder / data['weight_map']['a.weight']).read_bytes())
    data['weight_map']['a.weight'] = '../x.safetensors'
    refused_index(ctx, spoil(index, data), index, "'..' component")


@hostile
def shard_path_absolute(ctx):
    """A shard named by an absolute path to a real shard file."""
    folder, index, data = hostile_folder(ctx)
    data['weight_map']['a.weight'] = str(folder / data['weight_map']['a.weight'])
    refused_index(ctx, spoil(index, data), index, 'absolute path')


@hostile
def shard_path_drive_prefix(ctx):
    r"""A shard named C:\x.safetensors."""
    _, index, data = hostile_folder(ctx)
    data['weight_map']['a.weight'] = 'C:\\x.safetensors'
    refused_index(ctx, spoil(index, data), index, 'drive prefix')


@hostile
def shard_symlink_out_of_folder(ctx):
    """A shard file that is a symlink to a safetensors file outside the folder (IN: the
    folder)."""
    folder, index, data = hostile_folder(ctx)
    shard = folder / data['weight_map']['a.weight']
    outside = ctx.in_dir / 'outside.safetensors'
    os.replace(shard, outside)
    os.symlink(outside, shard)
    refused_index(ctx, folder, index, 'outside the index')


@hostile
def missing_shard(ctx):
    """A shard file the index names that is not there."""
    folder, index, data = hostile_folder(ctx)
    (folder / data['weight_map']['b.bias']).unlink()
    refused_index(ctx, index, index, 'no such file')


@hostile
def key_missing_from_shard(ctx):
    """weight_map lists a tensor its shard does not hold."""
    _, index, data = hostile_folder(ctx)
    data['weight_map']['ghost.weight'] = data['weight_map']['a.weight']
    refused_index(ctx, spoil(index, data), index, "tensor 'ghost.weight'", 'not in its shard')


@hostile
def key_in_two_shards(ctx):
    """Two shard files both hold a.weight."""
    folder, index, data = hostile_folder(ctx)
    st.write_safetensors(folder / data['weight_map']['b.bias'], {k: v for k, v in small_sd().items()
                                                                if k in ('a.weight', 'b.bias')})
    refused_index(ctx, index, index, "'a.weight' is held by two shards")


@hostile
def weight_map_not_an_object(ctx):
    """weight_map is a list."""
    _, index, data = hostile_folder(ctx)
    data['weight_map'] = list(data['weight_map'])
    refused_index(ctx, spoil(index, data), index, 'weight_map is a list')


@hostile
def shard_name_not_a_string(ctx):
    """A weight_map value that is a number."""
    _, index, data = hostile_folder(ctx)
    data['weight_map']['a.weight'] = 1
    refused_index(ctx, spoil(index, data), index, 'not a file name')


@hostile
def truncated_json(ctx):
    """The index cut in the middle (IN: the folder)."""
    folder, index, _ = hostile_folder(ctx)
    text = index.read_bytes()
    index.write_bytes(text[:len(text) // 2])
    refused_index(ctx, folder, index, 'not valid JSON')


@hostile
def huge_index(ctx):
    """An index over 64 MiB (a 65 MiB string in its metadata)."""
    _, index, data = hostile_folder(ctx)
    data['metadata']['pad'] = 'x' * (65 << 20)
    refused_index(ctx, spoil(index, data), index, 'over the 64 MiB')


@hostile
def bin_shard_in_safetensors_index(ctx):
    """A .bin shard (a real torch.save file) in model.safetensors.index.json."""
    import torch
    folder, index, data = hostile_folder(ctx)
    torch.save({'a.weight': small_sd()['a.weight']}, folder / 'pytorch_model.bin')
    data['weight_map']['a.weight'] = 'pytorch_model.bin'
    refused_index(ctx, spoil(index, data), index, '.bin file in an index of .safetensors shards')


@hostile
def safetensors_content_named_bin(ctx):
    """A bin index whose shard named .bin holds a safetensors file."""
    folder = ctx.in_dir / 'sharded'
    index, _ = write_bin_shards(folder, small_sd())
    data = json.loads(index.read_text())
    st.write_safetensors(folder / data['weight_map']['a.weight'], {'a.weight': small_sd()['a.weight']})
    refused_index(ctx, folder, index, 'not a torch.save file')


@hostile
def shard_root_not_a_state_dict(ctx):
    """A .bin shard whose root is a list of tensors."""
    import torch
    folder = ctx.in_dir / 'sharded'
    index, _ = write_bin_shards(folder, small_sd())
    data = json.loads(index.read_text())
    torch.save([small_sd()['a.weight']], folder / data['weight_map']['a.weight'])
    refused_index(ctx, index, index, 'not a state dict')
