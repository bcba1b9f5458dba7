"""Models users point netdissect at: ``torchvision:NAME``, ``file.py:factory``,
``package.module:factory`` and the bundled ``zoo:NAME``.

    >>> from netdissect.models import load_model
    >>> model, prep = load_model("torchvision:resnet18", weights="none")
    >>> prep.mean, prep.std
    ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
"""
from netdissect.models.loading import Preprocess, load_model, load_state_dict, parse_normalize

__all__ = ["load_model", "load_state_dict", "parse_normalize", "Preprocess"]
