"""DeepSpeed ZeRO run folders made with torch 1.13 alone, following
../shared/reference/sharded-formats.md §1 and the recipe of §4.2.

Stand-in modules carry the real module paths (deepspeed.runtime.zero.config.ZeroStageEnum,
deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler, deepspeed.utils.tensor_fragment and
deepspeed.runtime.bf16_optimizer fragment_address), so the pickles name the globals the real
DeepSpeed writes. Storages are tagged `cuda:N` (torch.serialization.location_tag patched while
saving), fp32 partitions are saved as views of longer storages, stage-3 padding holds NaN and
1e30, and the ZeroStageEnum is pickled by name (`getattr`, Python 3.11.0-3.11.3) or by value
(every other Python) as each fixture says.

The partitioning is written from §1.4 and then checked against facts that do not share its
arithmetic: each parameter rebuilt from `param_slice_mappings` (stage 1/2, bf16) or from the
ranks' per-parameter slices gathered as a [ranks, partition] table (stage 3) must equal its
master, and the saved sizes must add up as zero_to_fp32's checks require.
"""
import copy
import enum
import json
import math
import os
import shutil
import sys
import types
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.serialization

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'tests' / 'e2e'))
import models  # noqa: E402

BENCH_KINDS = ('zero2', 'zero3')


# ---- stand-in DeepSpeed classes, named as the real ones ------------------------------------

def _module(name):
    parts = name.split('.')
    for i in range(1, len(parts) + 1):
        full = '.'.join(parts[:i])
        if full not in sys.modules:
            sys.modules[full] = types.ModuleType(full)
            if i > 1:
                setattr(sys.modules['.'.join(parts[:i - 1])], parts[i - 1], sys.modules[full])
    return sys.modules[name]


def _place(cls, module, name=None):
    name = name or cls.__name__
    cls.__module__ = module
    cls.__qualname__ = name
    setattr(_module(module), name, cls)
    return cls


_ENUM_BY_VALUE = [False]


class ZeroStageEnum(int, enum.Enum):
    disabled = 0
    optimizer_states = 1
    gradients = 2
    weights = 3
    max_stage = 3

    def __reduce_ex__(self, proto):
        # Python 3.11.0-3.11.3 pickle an int Enum by name, every other Python by value.
        if _ENUM_BY_VALUE[0]:
            return self.__class__, (self._value_,)
        return getattr, (self.__class__, self._name_)


_place(ZeroStageEnum, 'deepspeed.runtime.zero.config')


class DynamicLossScaler:
    def __init__(self):
        self.cur_scale = 65536.0
        self.cur_iter = 1200
        self.last_overflow_iter = -1
        self.scale_factor = 2.0
        self.scale_window = 1000
        self.min_scale = 1
        self.delayed_shift = 1
        self.cur_hysteresis = 2
        self.consecutive_hysteresis = False
        self.raise_error_at_min_scale = True
        self.dynamic = True
        self.dtype = torch.float16


_place(DynamicLossScaler, 'deepspeed.runtime.fp16.loss_scaler')


@dataclass
class fragment_address:  # noqa: N801 (DeepSpeed's name)
    numel: int
    start: int


_place(fragment_address, 'deepspeed.utils.tensor_fragment')


@dataclass
class bf16_fragment_address:  # noqa: N801
    numel: int
    start: int


# v0.6.2-v0.7.2 defined it in the BF16_Optimizer's own module.
_place(bf16_fragment_address, 'deepspeed.runtime.bf16_optimizer', 'fragment_address')


class RunsCode:
    """A pickle that would run a command when loaded (never loaded here)."""

    def __reduce__(self):
        return os.system, ('echo this must never run',)


def save(obj, path, rank):
    """torch.save with every storage tagged cuda:RANK, as a GPU run writes it."""
    original = torch.serialization.location_tag
    torch.serialization.location_tag = lambda storage: f'cuda:{rank}'
    try:
        torch.save(obj, path)
    finally:
        torch.serialization.location_tag = original


# ---- the model a run trained -----------------------------------------------------------------

class Spec:
    """A model's masters, module state dict (model dtype), ties and frozen params."""

    def __init__(self, model, dtype=torch.float16, frozen=(), seed=0, shift=0.0, tensors=None):
        torch.manual_seed(seed)
        self.model_name = model
        if tensors is not None:  # the bench: bare tensors, no model class
            m = torch.nn.Module()
            for name, shape in tensors:
                m.register_parameter(name, torch.nn.Parameter(torch.randn(shape)))
        else:
            m = models.build(model)
            with torch.no_grad():
                for p in m.parameters():
                    p.copy_(torch.randn_like(p) + shift)
                for name, b in m.named_buffers():
                    if b.is_floating_point():
                        b.copy_(torch.rand_like(b) + 0.5)
                    else:
                        b.fill_(1200 + seed)
        self.masters = OrderedDict((n, p.detach().clone()) for n, p in m.named_parameters())
        self.shared = OrderedDict()  # alias -> the name named_parameters keeps
        first = {}
        for mod_name, mod in m.named_modules():
            for pn, p in mod._parameters.items():
                if p is None:
                    continue
                full = f'{mod_name}.{pn}' if mod_name else pn
                kept = first.setdefault(id(p), full)
                if kept != full:
                    self.shared[full] = kept
        for name in frozen:
            dict(m.named_parameters())[name].requires_grad_(False)
        self.frozen = [n for n in self.masters if n in frozen]
        self.trainable = [n for n in self.masters if n not in frozen]
        self.dtype = dtype
        low = copy.deepcopy(m).to(dtype)
        self.module = low.state_dict()  # keeps _metadata; ties stay one storage
        self.buffer_names = [n for n, _ in m.named_buffers()]
        self.low = OrderedDict((n, p.detach()) for n, p in low.named_parameters())

    def expected(self, frozen_values):
        """The consolidated state dict: masters (fp32) for trainable params, FROZEN_VALUES for
        frozen ones, buffers as the module holds them, aliases as views."""
        out = OrderedDict()
        for k, v in self.module.items():
            if k in self.shared:
                continue
            if k in self.trainable:
                out[k] = self.masters[k]
            elif k in self.frozen:
                out[k] = frozen_values[k]
            else:
                out[k] = v
        result = OrderedDict()
        for k in self.module:
            result[k] = out[self.shared[k]] if k in self.shared else out[k]
        result._metadata = self.module._metadata
        return result


def _groups(spec, n_groups):
    """Trainable params in N_GROUPS param groups: weights, then biases and norms."""
    if n_groups == 1:
        return [list(spec.trainable)]
    weights = [n for n in spec.trainable if spec.masters[n].dim() > 1]
    rest = [n for n in spec.trainable if spec.masters[n].dim() <= 1]
    return [g for g in (weights, rest)]


def _ds_config(stage, ws):
    return {'train_batch_size': 8 * ws, 'zero_optimization': {'stage': stage},
            'fp16': {'enabled': True}}


def _adam_state(numels, full_moments=True):
    state = {}
    for i, n in enumerate(numels):
        state[i] = {'step': torch.tensor(1200.0),
                    'exp_avg': torch.randn(n) if full_moments else torch.zeros(n),
                    'exp_avg_sq': torch.rand(n) if full_moments else torch.zeros(n)}
    return {'state': state, 'param_groups': [
        {'lr': 1e-4, 'betas': (0.9, 0.999), 'eps': 1e-8, 'weight_decay': 0.0, 'amsgrad': False,
         'params': [i]} for i in range(len(numels))]}


def _garbage(n, value=1e30):
    g = torch.full((n,), value)
    g[::2] = float('nan')
    return g


# ---- stage 1/2 and BF16_Optimizer -------------------------------------------------------------

def partition_stage12(spec, groups, ws, bf16_optimizer=False):
    """Per rank, per group: (saved fp32 tensor, padding, slice mapping). Alignment 2*ws
    (v0.5.3+); the padded flat cut in WS equal partitions; saved minus padding as a view of
    the longer partition (the BF16_Optimizer keeps it)."""
    ranks = [[] for _ in range(ws)]
    for group in groups:
        flat = torch.cat([spec.masters[n].reshape(-1) for n in group]) if group else torch.zeros(0)
        n = flat.numel()
        align = 2 * ws
        padded_len = math.ceil(n / align) * align
        plen = padded_len // ws
        padded = torch.cat([flat, torch.zeros(padded_len - n)])
        starts, offset = [], 0
        for name in group:
            starts.append(offset)
            offset += spec.masters[name].numel()
        for r in range(ws):
            lean = max(0, min(plen, n - r * plen))
            head = r % 2  # odd ranks: the view starts one element into its storage
            buf = torch.cat([torch.full((head,), 7.0), padded[r * plen:(r + 1) * plen]])
            keep = plen if bf16_optimizer else lean
            saved = buf[head:head + keep]
            mapping = OrderedDict()
            lo, hi = r * plen, r * plen + lean
            for name, start in zip(group, starts):
                a, b = max(lo, start), min(hi, start + spec.masters[name].numel())
                if a < b:
                    mapping[name] = (b - a, a - lo)
            ranks[r].append((saved, plen - lean, mapping))
    # Independent check: every param rebuilt from its fragments equals its master.
    for gi, group in enumerate(groups):
        for name in group:
            pieces = []
            for r in range(ws):
                saved, _, mapping = ranks[r][gi]
                if name in mapping:
                    numel, start = mapping[name]
                    pieces.append(saved[start:start + numel])
            got = torch.cat(pieces).view(spec.masters[name].shape)
            assert torch.equal(got, spec.masters[name]), name
        total = sum(ranks[r][gi][0].numel() for r in range(ws))
        need = sum(spec.masters[n].numel() for n in group)
        assert (total == need) if not bf16_optimizer else (0 <= total - need < 2 * ws)
    return ranks


def write_stage12(tag_dir, spec, ws, stage=2, version='0.16.4', by_value=True, n_groups=1,
                  bf16_optimizer=False, round_robin=False, shrink_rank=None, full_moments=True,
                  step=1200):
    """A stage 1/2 (or BF16_Optimizer) tag folder. VERSION picks the layout: < 0.6.0
    param_shapes in the optim files, < 0.7.0 an int zero_stage, ≥ 0.8.0 slice mappings,
    ≥ 0.9.1 frozen_*, ≥ 0.9.2 shared_params."""
    v = tuple(int(x) for x in version.split('.'))
    _ENUM_BY_VALUE[0] = by_value
    tag_dir.mkdir(parents=True, exist_ok=True)
    groups = _groups(spec, n_groups)
    if round_robin:  # round_robin_gradients: a permutation of each group
        groups = [g[1::2] + g[0::2] for g in groups]
    ranks = partition_stage12(spec, groups, ws, bf16_optimizer)
    param_shapes = [OrderedDict((n, spec.masters[n].shape) for n in g) for g in groups]
    model = OrderedDict()
    model['module'] = spec.module
    if v >= (0, 5, 0):
        model['buffer_names'] = spec.buffer_names
    model['optimizer'] = None
    if v >= (0, 6, 0):
        model['param_shapes'] = param_shapes
    if v >= (0, 9, 1) and stage >= 2 and spec.frozen:
        model['frozen_param_shapes'] = OrderedDict((n, spec.masters[n].shape) for n in spec.frozen)
    if v >= (0, 9, 2):
        model['shared_params'] = dict(spec.shared)
    if v >= (0, 9, 1) and stage >= 2 and spec.frozen:
        model['frozen_param_fragments'] = OrderedDict((n, spec.low[n]) for n in spec.frozen)
    model['lr_scheduler'] = None
    if v >= (0, 8, 0):
        model['data_sampler'] = None
        model['random_ltd'] = None
    model['sparse_tensor_module_names' if v >= (0, 6, 0) else 'csr_tensor_module_names'] = set()
    model.update(skipped_steps=0, global_steps=step, global_samples=8 * ws * step,
                 dp_world_size=ws, mp_world_size=1, ds_config=_ds_config(stage, ws),
                 ds_version=version)
    save(dict(model), tag_dir / 'mp_rank_00_model_states.pt', 0)
    prefix = 'bf16_' if bf16_optimizer else ''
    for r in range(ws):
        parts = [saved for saved, _, _ in ranks[r]]
        if shrink_rank == r:
            parts[0] = parts[0][:-1]
        osd = OrderedDict()
        if not bf16_optimizer:
            osd['loss_scaler'] = DynamicLossScaler()
            osd['dynamic_loss_scale'] = True
            osd['overflow'] = False
        osd['clip_grad'] = 1.0
        osd['base_optimizer_state'] = _adam_state([p.numel() for p in parts], full_moments)
        osd['single_partition_of_fp32_groups'] = parts
        if not bf16_optimizer:
            osd['zero_stage'] = (ZeroStageEnum(stage) if v >= (0, 7, 0) else 2)
        if v >= (0, 7, 0) or bf16_optimizer:
            osd['group_paddings' if v >= (0, 7, 0) else 'groups_padding'] = [
                pad for _, pad, _ in ranks[r]]
        osd['partition_count'] = [ws] * len(groups)
        osd['ds_version'] = version
        if v >= (0, 8, 0) or (bf16_optimizer and v >= (0, 7, 0)):
            cls = fragment_address if v >= (0, 7, 3) else bf16_fragment_address
            osd['param_slice_mappings'] = [
                OrderedDict((n, cls(numel=a, start=b)) for n, (a, b) in mapping.items())
                for _, _, mapping in ranks[r]]
        top = {'optimizer_state_dict': dict(osd), 'ds_config': _ds_config(stage, ws),
               'ds_version': version}
        if v < (0, 6, 0):
            top['param_shapes'] = param_shapes if v >= (0, 5, 4) else param_shapes[0]
        save(top, tag_dir / f'{prefix}zero_pp_rank_{r}_mp_rank_00_optim_states.pt', r)
    frozen = OrderedDict((n, spec.low[n]) for n in spec.frozen)
    return spec.expected(frozen)


# ---- stage 3 -----------------------------------------------------------------------------------

def partition_stage3(tensor, ws, r):
    """Rank R's ceil-sized slice of TENSOR flattened; the last ranks padded with garbage
    (ds_tensor comes from torch.empty: its padding is not zero)."""
    flat = tensor.reshape(-1)
    p = math.ceil(flat.numel() / ws)
    padded = torch.cat([flat, _garbage(ws * p - flat.numel()).to(flat.dtype)])
    return padded[r * p:(r + 1) * p].clone()


def write_stage3(tag_dir, spec, ws, version='0.16.4', by_value=True, sub_group_params=2,
                 full_moments=True, step=1200):
    v = tuple(int(x) for x in version.split('.'))
    _ENUM_BY_VALUE[0] = by_value
    tag_dir.mkdir(parents=True, exist_ok=True)
    names = list(spec.trainable)
    sub_groups = [names[i:i + sub_group_params] for i in range(0, len(names), sub_group_params)]
    param_shapes = [OrderedDict((n, spec.masters[n].shape) for n in g) for g in sub_groups]
    flats = [[torch.cat([partition_stage3(spec.masters[n], ws, r) for n in g]) for g in sub_groups]
             for r in range(ws)]
    # Independent check: the ranks' flats as a [ws, len] table; each param's columns, read
    # row-major, start with the master; and len × ws = Σ ceil(numel/ws) × ws.
    table = torch.stack([torch.cat(f) for f in flats])
    col = 0
    for n in names:
        p = math.ceil(spec.masters[n].numel() / ws)
        got = table[:, col:col + p].reshape(-1)[:spec.masters[n].numel()]
        assert torch.equal(got.view(spec.masters[n].shape), spec.masters[n]), n
        col += p
    assert col == table.shape[1]
    placeholders = {}
    for r in range(ws):
        module = OrderedDict()
        for k, t in spec.module.items():
            if k in spec.masters or k in spec.shared:
                src = spec.shared.get(k, k)
                module[k] = placeholders.setdefault(src, torch.empty(0, dtype=spec.dtype))
            else:
                module[k] = t
        module._metadata = spec.module._metadata
        model = OrderedDict(module=module, buffer_names=spec.buffer_names, optimizer=None,
                            param_shapes=param_shapes)
        if spec.frozen:
            model['frozen_param_shapes'] = OrderedDict(
                (n, spec.masters[n].shape) for n in spec.frozen)
        model['shared_params'] = dict(spec.shared) if r == 0 else {}
        if spec.frozen:
            model['frozen_param_fragments'] = OrderedDict(
                (n, partition_stage3(spec.low[n], ws, r)) for n in spec.frozen)
        model.update(lr_scheduler=None, data_sampler=None, random_ltd=None,
                     sparse_tensor_module_names=set(), skipped_steps=0, global_steps=step,
                     global_samples=8 * ws * step, dp_world_size=ws, mp_world_size=1,
                     ds_config=_ds_config(3, ws), ds_version=version)
        save(dict(model), tag_dir / f'zero_pp_rank_{r}_mp_rank_00_model_states.pt', r)
        osd = OrderedDict(zero_stage=ZeroStageEnum.weights if v >= (0, 7, 0) else 3,
                          loss_scaler=DynamicLossScaler(), dynamic_loss_scale=True,
                          overflow=False, partition_count=ws)
        osd['optimizer_state_dict'] = _adam_state([f.numel() for f in flats[r]], full_moments)
        osd['fp32_flat_groups'] = flats[r]
        top = {'optimizer_state_dict': dict(osd), 'ds_config': _ds_config(3, ws),
               'ds_version': version}
        save(top, tag_dir / f'zero_pp_rank_{r}_mp_rank_00_optim_states.pt', r)
    return spec.expected(OrderedDict((n, spec.low[n]) for n in spec.frozen))


# ---- the fixtures --------------------------------------------------------------------------------

def _fixture(out, name, model, options=(), error=None):
    folder = out / name
    if folder.exists():
        shutil.rmtree(folder)
    (folder / 'run').mkdir(parents=True)
    (folder / 'fixture.json').write_text(json.dumps(
        {'model': model, 'options': list(options), 'error': error}) + '\n')
    return folder


def _latest(run, tag):
    (run / 'latest').write_text(tag)  # rank 0 writes it with no trailing newline


def write_all(out: Path):
    out = Path(out)

    # Stage 2, 4 ranks, fp16, by-value enum, DeepSpeed 0.16: BatchNorm's int64 counter.
    f = _fixture(out, 'stage2_tiny_cnn', 'tiny_cnn')
    expected = write_stage12(f / 'run' / 'global_step1200', Spec('tiny_cnn'), 4)
    _latest(f / 'run', 'global_step1200')
    torch.save(expected, f / 'expected.pt')

    # Stage 1, 12 ranks (rank 10 sorts after rank 2), two groups with empty partitions,
    # by-name enum (Python 3.11.0-3.11.3), frozen BatchNorm affine from the module (stage 1
    # saves no frozen_param_*), round-robin order, DeepSpeed 0.10.0.
    f = _fixture(out, 'stage1_plain_12_ranks', 'plain')
    spec = Spec('plain', frozen=('layers.1.weight', 'layers.1.bias'), seed=1)
    expected = write_stage12(f / 'run' / 'global_step40', spec, 12, stage=1, version='0.10.0',
                             by_value=False, n_groups=2, round_robin=True, step=40)
    _latest(f / 'run', 'global_step40')
    torch.save(expected, f / 'expected.pt')

    # Stage 2, 7 ranks, tied lm_head (shared_params), a frozen norm weight from
    # frozen_param_fragments, bf16 module.
    f = _fixture(out, 'stage2_tiny_lm_tied_frozen', 'tiny_lm')
    spec = Spec('tiny_lm', dtype=torch.bfloat16, frozen=('norm.weight',), seed=2)
    expected = write_stage12(f / 'run' / 'global_step8', spec, 7, version='0.12.6', step=8)
    _latest(f / 'run', 'global_step8')
    torch.save(expected, f / 'expected.pt')

    # Stage 3, 3 ranks, IN is the tag folder itself: tied (shared_params on rank 0 only),
    # frozen fragments per rank, garbage padding, sub-groups of 2 params, by-name enum.
    f = _fixture(out, 'stage3_tiny_lm_tag_folder', 'tiny_lm')
    spec = Spec('tiny_lm', frozen=('norm.weight',), seed=3)
    shutil.rmtree(f / 'run')
    expected = write_stage3(f / 'run', spec, 3, version='0.14.0', by_value=False)
    torch.save(expected, f / 'expected.pt')

    # Stage 3, 5 ranks (params smaller than the world: empty slices), BatchNorm, 0.16.
    f = _fixture(out, 'stage3_tiny_cnn_5_ranks', 'tiny_cnn')
    expected = write_stage3(f / 'run' / 'global_step3', Spec('tiny_cnn', seed=4), 5,
                            sub_group_params=3, step=3)
    _latest(f / 'run', 'global_step3')
    torch.save(expected, f / 'expected.pt')

    # BF16_Optimizer (0.7.0): bf16_ files, no zero_stage, unstripped partitions,
    # fragment_address from deepspeed.runtime.bf16_optimizer.
    f = _fixture(out, 'bf16_optimizer_vgg', 'vgg_like')
    spec = Spec('vgg_like', dtype=torch.bfloat16, seed=5)
    expected = write_stage12(f / 'run' / 'global_step5', spec, 3, version='0.7.0',
                             bf16_optimizer=True, n_groups=2, step=5)
    _latest(f / 'run', 'global_step5')
    torch.save(expected, f / 'expected.pt')

    # DeepSpeed 0.5.8: int zero_stage, param_shapes in the optim files; two tags, `latest`
    # names the second, --tag picks the first.
    f = _fixture(out, 'old_0_5_8_with_tag', 'encoder_net', options=['--tag', 'global_step1'])
    expected = write_stage12(f / 'run' / 'global_step1', Spec('encoder_net', seed=6), 2,
                             version='0.5.8', step=1)
    write_stage12(f / 'run' / 'global_step2', Spec('encoder_net', seed=7, shift=1.0), 2,
                  version='0.5.8', step=2)
    _latest(f / 'run', 'global_step2')
    torch.save(expected, f / 'expected.pt')

    # DeepSpeed 0.4: param_shapes one OrderedDict in the optim files.
    f = _fixture(out, 'old_0_4_single_param_shapes', 'plain')
    expected = write_stage12(f / 'run' / 'global_step9', Spec('plain', seed=8), 3,
                             version='0.4.6', step=9)
    _latest(f / 'run', 'global_step9')
    torch.save(expected, f / 'expected.pt')

    # Negatives: a stage-2 run of 4 ranks, each spoiled one way.
    def negative(name, error, spoil, **kw):
        f = _fixture(out, name, 'tiny_cnn', error=error)
        tag = f / 'run' / 'global_step1200'
        write_stage12(tag, Spec('tiny_cnn', seed=9), 4, **kw)
        _latest(f / 'run', 'global_step1200')
        spoil(tag)

    negative('neg_missing_rank', 'no zero_pp_rank_2_mp_rank_00_optim_states.pt',
             lambda t: (t / 'zero_pp_rank_2_mp_rank_00_optim_states.pt').unlink())
    negative('neg_extra_stale_rank', 'zero_pp_rank_4_mp_rank_00_optim_states.pt: an extra rank',
             lambda t: shutil.copyfile(t / 'zero_pp_rank_3_mp_rank_00_optim_states.pt',
                                       t / 'zero_pp_rank_4_mp_rank_00_optim_states.pt'))
    negative('neg_sizes_do_not_add_up', 'param group 0: sizes do not add up',
             lambda t: None, shrink_rank=1)
    negative('neg_mp_rank_01', 'mp_rank_01_model_states.pt: tensor or pipeline parallelism',
             lambda t: shutil.copyfile(t / 'mp_rank_00_model_states.pt',
                                       t / 'mp_rank_01_model_states.pt'))
    negative('neg_moe_expert_files', 'expp_rank_0_mp_rank_00_optim_states.pt: MoE',
             lambda t: shutil.copyfile(t / 'zero_pp_rank_0_mp_rank_00_optim_states.pt',
                                       t / 'expp_rank_0_mp_rank_00_optim_states.pt'))
    negative('neg_nvme_offload', 'offloaded_tensors: NVMe',
             lambda t: (t / 'offloaded_tensors').mkdir())

    def runs_code(tag):
        path = tag / 'zero_pp_rank_1_mp_rank_00_optim_states.pt'
        top = torch.load(path, map_location='cpu')
        top['ds_config'] = RunsCode()
        save(top, path, 1)
    negative('neg_code_running_global', 'posix.system', runs_code)


def write_bench(kind, params, out: Path):
    """One run folder in OUT: PARAMS fp32 parameters on 2 ranks, Adam moments beside."""
    out = Path(out)
    rows = 1000
    count = 8
    per = params // count
    shapes = [(f'layer{i}_weight', (per // rows, rows)) for i in range(count)]
    leftover = params - sum(a * b for _, (a, b) in shapes)
    if leftover:
        shapes.append(('head_bias', (leftover,)))
    spec = Spec(None, tensors=shapes)
    run = out / f'{kind}_run'
    if kind == 'zero2':
        write_stage12(run / 'global_step1', spec, 2)
    elif kind == 'zero3':
        write_stage3(run / 'global_step1', spec, 2, sub_group_params=4)
    else:
        raise SystemExit(f'zero.py: unknown bench kind {kind}')
    _latest(run, 'global_step1')
