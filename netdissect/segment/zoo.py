"""The bundled segmenters (``zoo:NAME``): today ``zoo:world-seg`` (:mod:`netdissect.segment.worldseg`)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from netdissect.errors import ModelError
from netdissect.segment import Segmenter, file_sha256
from netdissect.segment.worldseg import HEADS, WorldSeg

WEIGHTS_DIR = Path(__file__).parent / "weights"
META_KEY = "netdissect_segmenter"
ZOO_SEGMENTERS = {"world-seg": "small CNN trained on the synthetic world's objects, parts and materials"}


class WorldSegSegmenter(Segmenter):
    """``zoo:world-seg``: one plane per head (object, part, material), argmax of the logits
    upsampled (bilinear) to the label size.  A name in two heads (``water``: object and
    material) is one concept, of the first head's category, as the world's catalogue has it."""

    name = "zoo:world-seg"

    def __init__(self, path: Path):
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), framework="pt") as f:
                self.record = json.loads((f.metadata() or {}).get(META_KEY, "{}"))
            state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
            self.model = WorldSeg(self.record.get("train", {}).get("width", 32))
            self.model.load_state_dict(state)
        except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file
            raise ModelError(f"{path}: not the weights of zoo:world-seg ({type(exc).__name__}: {exc})") from None
        self.model.eval()
        self.sha256 = file_sha256(path)
        self.concepts, self.categories, maps = [], [], []
        for cat, names in HEADS:
            m = np.zeros(len(names) + 1, np.int64)
            for j, n in enumerate(names):
                if n not in self.concepts:
                    self.concepts.append(n)
                    self.categories.append(cat)
                m[j + 1] = self.concepts.index(n) + 1
            maps.append(torch.from_numpy(m))
        self.maps = maps

    def identity(self) -> dict:
        return {"kind": "zoo:world-seg", "sha256": self.sha256}

    def to(self, device):
        self.model.to(device)
        self.maps = [m.to(device) for m in self.maps]
        return self

    @torch.inference_mode()
    def segment(self, images, size):
        outs = self.model(images.float())
        planes = []
        for logits, m in zip(outs, self.maps):
            if tuple(logits.shape[2:]) != tuple(size):
                logits = torch.nn.functional.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
            planes.append(m[logits.argmax(1)])
        return torch.stack(planes, 1)


def load_zoo_segmenter(name: str):
    if name not in ZOO_SEGMENTERS:
        raise ModelError(f"unknown zoo segmenter {name!r}; bundled: {', '.join('zoo:' + n for n in ZOO_SEGMENTERS)}")
    path = WEIGHTS_DIR / f"{name}.safetensors"
    if not path.exists():
        raise ModelError(f"zoo segmenter {name!r} has no bundled weights ({path}); rebuild them with "
                         "`python scripts/train_worldseg.py`")
    return WorldSegSegmenter(path)
