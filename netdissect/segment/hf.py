"""``hf:PATH_OR_ID``: a Hugging Face ``transformers`` semantic-segmentation model as a segmenter.

    >>> seg = load_segmenter("hf:nvidia/segformer-b0-finetuned-ade-512-512")   # doctest: +SKIP

Any model ``AutoModelForSemanticSegmentation`` loads (SegFormer, UperNet,
DPT, BEiT) and Mask2Former / MaskFormer / OneFormer through their universal
heads: every model's output goes through its image processor's
``post_process_semantic_segmentation`` at the label size, so each pixel gets
one class.  Label names come from the config's ``id2label``; class ``i`` is
concept number ``i + 1``.  Categories: the shipped table
``ade20k_categories.json`` (ADE20K names -> material or part; every other name
is an object).  A local folder loads offline; an id is fetched from the hub
when online.  The images are normalised with the processor's mean and std
and resized to its input size.  Needs the optional extra: ``pip install netdissect[segment]``.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from netdissect.errors import ModelError
from netdissect.segment import Segmenter, file_sha256

TABLE = Path(__file__).with_name("ade20k_categories.json")


def category_of(name: str, table: dict | None = None) -> str:
    """The category of an ADE20K-style label name (see the module)."""
    table = table or json.loads(TABLE.read_text())
    keys = {name.lower().strip()} | {p.strip().lower() for sep in (",", ";") for p in name.split(sep)}
    for cat in ("part", "material"):
        if keys & {n.lower() for n in table[cat]}:
            return cat
    return "object"


class HFSegmenter(Segmenter):
    name = "hf"

    def __init__(self, where: str):
        try:
            import transformers
        except ImportError:
            raise ModelError("hf: segmenters need transformers: pip install netdissect[segment] "
                             "(or pip install transformers)") from None
        local = Path(where).exists()
        kw = {"local_files_only": True} if local else {}
        try:
            self.config = transformers.AutoConfig.from_pretrained(where, **kw)
            archs = self.config.architectures or []
            kind = self.config.model_type
            if kind in ("mask2former", "maskformer", "oneformer"):
                loader = getattr(transformers, {"mask2former": "Mask2FormerForUniversalSegmentation",
                                                "maskformer": "MaskFormerForInstanceSegmentation",
                                                "oneformer": "OneFormerForUniversalSegmentation"}[kind])
            else:
                loader = transformers.AutoModelForSemanticSegmentation
            self.model = loader.from_pretrained(where, **kw).eval()
        except Exception as exc:  # noqa: BLE001 - transformers raises OSError/ValueError/KeyError...
            raise ModelError(f"hf:{where}: cannot load a semantic-segmentation model ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
        try:
            self.processor = transformers.AutoImageProcessor.from_pretrained(where, **kw)
        except Exception:  # noqa: BLE001 - a folder without preprocessor_config.json: defaults
            self.processor = None
        id2label = {int(k): v for k, v in (self.config.id2label or {}).items()}
        if not id2label:
            raise ModelError(f"hf:{where}: the config has no id2label (label names)")
        n = max(id2label) + 1
        self.concepts = [id2label.get(i, f"class{i}") for i in range(n)]
        table = json.loads(TABLE.read_text())
        self.categories = [category_of(c, table) for c in self.concepts]
        self.where, self.archs = where, archs
        weights = sorted(Path(where).glob("*.safetensors")) + sorted(Path(where).glob("*.bin")) if local else []
        self.sha = [file_sha256(p)[:16] for p in weights] if weights else None
        mean = getattr(self.processor, "image_mean", None) or [0.5, 0.5, 0.5]
        std = getattr(self.processor, "image_std", None) or [0.5, 0.5, 0.5]
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        size = getattr(self.processor, "size", None) or {}
        self.input = (size.get("height"), size.get("width")) if "height" in size else None

    def identity(self) -> dict:
        return {"kind": "hf", "where": str(Path(self.where).resolve()) if Path(self.where).exists() else self.where,
                "model_type": self.config.model_type, "weights_sha256": self.sha,
                "labels": len(self.concepts)}

    def to(self, device):
        self.model.to(device)
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self

    @torch.inference_mode()
    def segment(self, images, size):
        x = images.float()
        if self.input and tuple(x.shape[2:]) != self.input:
            x = torch.nn.functional.interpolate(x, size=self.input, mode="bilinear", align_corners=False)
        out = self.model(pixel_values=(x - self.mean.to(x.device)) / self.std.to(x.device))
        if hasattr(out, "logits") and out.logits is not None and out.logits.ndim == 4:
            logits = torch.nn.functional.interpolate(out.logits.float(), size=tuple(size), mode="bilinear",
                                                     align_corners=False)
            return logits.argmax(1).unsqueeze(1) + 1
        maps = self.processor.post_process_semantic_segmentation(out, target_sizes=[tuple(size)] * len(x))
        return torch.stack([m.to(images.device) for m in maps]).unsqueeze(1) + 1
