"""The zoo's models: architecture options and the recipe that trains each.

    >>> from netdissect.models.zoo.registry import ZOO
    >>> ZOO["scene-cnn-bn"].arch["batchnorm"]
    True

Each entry trains on scene labels of the synthetic world only
(:class:`netdissect.data.synth.SceneDataset`).  Data seeds 0-999 are
reserved for training and held-out sets; the demo probes with seed 2017.
A snapshot entry (``snapshot_of``) is a checkpoint saved at ``step`` while
its base model trains; it has no recipe of its own.
"""
from __future__ import annotations

from dataclasses import dataclass, field

BASE_ARCH = {"widths": (32, 64, 96, 96, 128), "batchnorm": False, "dropout": 0.5, "head": "fc", "hidden": 256}
BASE_TRAIN = {"data_seed": 1, "heldout_seed": 2, "n_train": 8000, "n_heldout": 2000, "size": 112,
              "steps": 2500, "batch": 64, "lr": 2e-3, "weight_decay": 1e-4, "warmup": 100, "torch_seed": 0}
LAYERS = ["conv1", "conv2", "conv3", "conv4", "conv5"]


@dataclass(frozen=True)
class ZooEntry:
    name: str
    description: str
    arch: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    snapshot_of: str | None = None
    step: int | None = None
    snapshots: tuple[int, ...] = ()

    @property
    def trainer(self) -> str:
        """The zoo model whose training run produces this entry's weights."""
        return self.snapshot_of or self.name

    @property
    def train_command(self) -> str:
        return f"python scripts/train_zoo.py {self.trainer}"


def _entry(name, description, arch=None, snapshots=(), **train):
    return ZooEntry(name, description, {**BASE_ARCH, **(arch or {})}, {**BASE_TRAIN, **train},
                    snapshots=tuple(snapshots))


_BASE = _entry("scene-cnn", "baseline: 5 conv stages, fc head with dropout 0.5", snapshots=(50, 200))
ZOO: dict[str, ZooEntry] = {
    e.name: e for e in [
        _BASE,
        # Every variant trains as long as the baseline (the comparisons the CVPR 2017 paper makes);
        # -seed1 differs from the baseline only in its torch seed (initialisation, dropout masks,
        # batch order), so that the variants' differences can be told from seed noise.
        _entry("scene-cnn-bn", "with batch normalisation after every conv", {"batchnorm": True}),
        _entry("scene-cnn-nodrop", "without dropout in the fc head", {"dropout": 0.0}),
        _entry("scene-cnn-gap", "wider conv5 (256 units), global average pooling + linear head",
               {"widths": (32, 64, 96, 96, 256), "head": "gap", "dropout": 0.0}),
        # The demo's model: wider conv3-conv5 and random crops, so that scenes must be recognised from
        # partial views (measured: many more distinct object/part detectors in conv5; docs/experiments.md).
        _entry("scene-cnn-wide", "wider conv3-conv5 (128, 128, 256 units), random-crop augmentation, 3000 steps",
               {"widths": (32, 64, 128, 128, 256)}, crop_scale=0.35, steps=3000),
        _entry("scene-cnn-seed1", "the baseline's recipe with another torch seed "
               "(initialisation, dropout, batch order)", torch_seed=1),
    ]
}
for _step in _BASE.snapshots:
    _name = f"scene-cnn-step{_step}"
    ZOO[_name] = ZooEntry(_name, f"snapshot of scene-cnn after {_step} of {_BASE.train['steps']} steps",
                          dict(_BASE.arch), dict(_BASE.train), snapshot_of="scene-cnn", step=_step)
