"""Model classes shared by tools/make_fixtures.py (to build fixtures) and the e2e judge
(to check that a converted state dict loads with ``load_state_dict(strict=True)``).

Run with /usr/bin/python3 (the interpreter that has torch 1.13 + torchvision 0.14).

The ``*StandIn`` wrappers reproduce the attribute names that real wrappers leak into state
dict keys and ``_metadata`` (torch 1.13 has no ``torch.compile``, and real FSDP needs a
process group): ``OptimizedModule._orig_mod``, ``FullyShardedDataParallel._fsdp_wrapped_module``
and ``CheckpointWrapper._checkpoint_wrapped_module``. Each wrapper's ``_version`` is the
``nn.Module`` default (1), as in torch.
"""
import torch
from torch import nn


class TinyCNN(nn.Module):
    """Conv2d + BatchNorm2d + Linear: BN buffers (incl. num_batches_tracked) and
    ``_metadata`` versions (BatchNorm is version 2)."""

    # A non-default root version: in a DataParallel state dict the wrapper's root ('')
    # says version 1 and this module's ('module') says 2, so a converter must keep the
    # inner module's entry when both map to ''.
    _version = 2

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(x.mean(dim=(2, 3)))


class Plain(nn.Module):
    """Plain keys ``layers.0.weight``, ``layers.1.running_mean``, ``layers.2.bias`` ..."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Linear(8, 4)])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class TinyLM(nn.Module):
    """``lm_head.weight`` IS ``embed.weight`` (tied): the state dict has two keys for
    one Parameter, saved as one storage."""

    def __init__(self, vocab=32, dim=8):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.norm = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        self.lm_head.weight = self.embed.weight

    def forward(self, ids):
        return self.lm_head(self.norm(self.embed(ids)))


class OptimizedModuleStandIn(nn.Module):
    """Like torch._dynamo's OptimizedModule: the wrapped model is ``self._orig_mod``."""

    def __init__(self, mod):
        super().__init__()
        self._orig_mod = mod

    def forward(self, *a, **k):
        return self._orig_mod(*a, **k)


class FSDPStandIn(nn.Module):
    """Like FullyShardedDataParallel: the wrapped module is ``self._fsdp_wrapped_module``."""

    def __init__(self, mod):
        super().__init__()
        self._fsdp_wrapped_module = mod

    def forward(self, *a, **k):
        return self._fsdp_wrapped_module(*a, **k)


class CheckpointWrapperStandIn(nn.Module):
    """Like torch.distributed's CheckpointWrapper: ``self._checkpoint_wrapped_module``."""

    def __init__(self, mod):
        super().__init__()
        self._checkpoint_wrapped_module = mod

    def forward(self, *a, **k):
        return self._checkpoint_wrapped_module(*a, **k)


class VGGLike(nn.Module):
    """A small VGG as in bearpaw/pytorch-classification (``features`` + ``classifier``).
    bearpaw wraps only ``features`` in ``nn.DataParallel`` for VGG/AlexNet, so its
    checkpoints hold ``features.module.0.weight`` ... next to plain ``classifier.weight``."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.classifier = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).mean(dim=(2, 3)))


class BackboneAux(nn.Module):
    """Training-time model: ``backbone`` (conv + bn), ``head`` and an auxiliary ``aux_head``
    that the deployed model (EncoderNet) does not have."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4))
        self.head = nn.Linear(4, num_classes)
        self.aux_head = nn.Linear(4, num_classes)

    def forward(self, x):
        f = torch.relu(self.backbone(x)).mean(dim=(2, 3))
        return self.head(f), self.aux_head(f)


class EncoderNet(nn.Module):
    """The deployed form of BackboneAux: ``encoder`` (the backbone's layers) and ``head``."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4))
        self.head = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.head(torch.relu(self.encoder(x)).mean(dim=(2, 3)))


class LightningModuleStandIn(nn.Module):
    """Like a LightningModule that holds the network as ``self.model``: keys ``model.<k>``,
    ``_metadata`` prefixes ``''``, ``model``, ``model.conv`` ... (no lightning package needed)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, *a, **k):
        return self.model(*a, **k)


class FabricModuleStandIn(nn.Module):
    """Like lightning.fabric's _FabricModule: the wrapped module is ``self._forward_module``."""

    def __init__(self, mod):
        super().__init__()
        self._forward_module = mod

    def forward(self, *a, **k):
        return self._forward_module(*a, **k)


class WholeBlock(nn.Module):
    """A child whose state_dict() skips three things: a None parameter (Linear(bias=False)),
    a non-persistent buffer and a None buffer."""

    def __init__(self, dim=8):
        super().__init__()
        self.proj = nn.Linear(dim, dim, bias=False)
        self.register_buffer('scale', torch.ones(dim))
        self.register_buffer('cache', torch.zeros(dim), persistent=False)
        self.register_buffer('unset', None)

    def forward(self, x):
        return self.proj(x) * self.scale


class WholeModel(nn.Module):
    """Pickled whole by ``torch.save(model)`` in tests/e2e/cases_pickled_model.py: BatchNorm
    buffers (incl. num_batches_tracked), nested children, a None child, and ``head.weight``
    IS ``body.0.proj.weight`` (tied: one Parameter in two modules)."""

    def __init__(self, dim=8):
        super().__init__()
        self.conv = nn.Conv2d(3, dim, 3, padding=1)
        self.bn = nn.BatchNorm2d(dim)
        self.body = nn.Sequential(WholeBlock(dim), nn.ReLU(), WholeBlock(dim))
        self.add_module('aux', None)
        self.head = nn.Linear(dim, dim, bias=False)
        self.head.weight = self.body[0].proj.weight

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))
        return self.head(self.body(x))

def _resnet18():
    import torchvision
    return torchvision.models.resnet18()


def _mobilenet_v3_small():
    import torchvision
    return torchvision.models.mobilenet_v3_small()


# name -> constructor of the plain (unwrapped) model
MODELS = {
    'tiny_cnn': TinyCNN,
    'plain': Plain,
    'tiny_lm': TinyLM,
    'vgg_like': VGGLike,
    'encoder_net': EncoderNet,
    'resnet18': _resnet18,
    'mobilenet_v3_small': _mobilenet_v3_small,
}


def build(name):
    return MODELS[name]()
