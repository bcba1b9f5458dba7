"""Load a model from a spec string, with its preprocessing."""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from netdissect.errors import ModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """How RGB images in [0, 1] are normalised before the model: ``(x - mean) / std``.

    ``mean``/``std`` None means the model takes RGB in [0, 1] as is.
    """

    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    def describe(self) -> str:
        if self.mean is None:
            return "none"
        if self.mean == IMAGENET_MEAN and self.std == IMAGENET_STD:
            return "imagenet"
        return ",".join(f"{v:g}" for v in (*self.mean, *self.std))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is None:
            return x
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean).div_(std)  # one new tensor, same values as (x - mean) / std


def parse_normalize(value: str | None, default: Preprocess = Preprocess()) -> Preprocess:
    """``imagenet`` | ``none`` | ``MEAN,STD`` (one number each, or three each: ``m1,m2,m3,s1,s2,s3``)."""
    if value is None:
        return default
    v = value.strip().lower()
    if v == "imagenet":
        return Preprocess(IMAGENET_MEAN, IMAGENET_STD)
    if v == "none":
        return Preprocess()
    try:
        nums = [float(t) for t in v.split(",")]
    except ValueError:
        nums = []
    if len(nums) == 2:
        return Preprocess((nums[0],) * 3, (nums[1],) * 3)
    if len(nums) == 6:
        return Preprocess(tuple(nums[:3]), tuple(nums[3:]))
    raise ModelError(
        f"--normalize {value!r}: expected 'imagenet', 'none', 'MEAN,STD' or 'm1,m2,m3,s1,s2,s3'"
    )


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A plain state_dict from a ``.pth``/``.pth.tar``/``.safetensors`` file.

    Accepts checkpoint dicts holding ``state_dict`` (or ``model``) and strips
    DataParallel's ``module.`` prefixes, as the Places365 releases need.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign file
        raise ModelError(f"cannot read weights file {path}: {exc}") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelError(f"{path}: not a state_dict (expected a dict of tensors, or a checkpoint holding 'state_dict')")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _apply_state_dict(model: nn.Module, sd: dict, source: str) -> None:
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as exc:
        raise ModelError(f"weights {source} do not fit the model: {exc}") from None
    if missing or unexpected:
        raise ModelError(
            f"weights {source} do not fit {type(model).__name__}: "
            f"missing keys {list(missing)[:5]}, unexpected keys {list(unexpected)[:5]}"
        )


def _num_classes(sd: dict) -> int | None:
    for key in ("fc.weight", "classifier.weight", "classifier.6.weight", "classifier.1.weight", "heads.head.weight"):
        if key in sd and sd[key].ndim == 2:
            return int(sd[key].shape[0])
    return None


def _torchvision(name: str, weights: str | None) -> tuple[nn.Module, Preprocess]:
    import torchvision

    if name not in torchvision.models.list_models():
        import difflib

        close = difflib.get_close_matches(name, torchvision.models.list_models(), n=5)
        raise ModelError(f"torchvision has no model {name!r}; close: {', '.join(close) or 'none'}")
    w = (weights or "DEFAULT").strip()
    imagenet = Preprocess(IMAGENET_MEAN, IMAGENET_STD)
    if w.lower() == "none":
        return torchvision.models.get_model(name, weights=None), imagenet
    if os.path.exists(w) or w.endswith((".pth", ".pt", ".tar", ".safetensors")):
        sd = load_state_dict(w)
        kwargs = {}
        n = _num_classes(sd)
        if n is not None:
            kwargs["num_classes"] = n  # Places365 checkpoints have 365 classes
        model = torchvision.models.get_model(name, weights=None, **kwargs)
        _apply_state_dict(model, sd, w)
        return model, imagenet
    try:
        enum = torchvision.models.get_model_weights(name)
        wobj = enum.DEFAULT if w.upper() == "DEFAULT" else enum[w]
    except (KeyError, ValueError):
        raise ModelError(f"unknown weights {w!r} for torchvision:{name} (use DEFAULT, none, a weights enum name, or a file)") from None
    model = torchvision.models.get_model(name, weights=wobj)  # downloads on first use
    tf = wobj.transforms()
    prep = Preprocess(tuple(tf.mean), tuple(tf.std)) if hasattr(tf, "mean") else imagenet
    return model, prep


def _factory(spec: str) -> nn.Module:
    target, _, attr = spec.rpartition(":")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        mod_name = f"_netdissect_user_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]}"
        module_spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[mod_name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            raise ModelError(f"error while importing {path}: {type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ModelError(f"cannot import module {target!r} for --model {spec!r}: {exc}") from None
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise ModelError(f"{target} has no callable {attr!r} (--model {spec!r})")
    try:
        model = fn()
    except Exception as exc:
        raise ModelError(f"--model {spec!r}: calling {attr}() failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ModelError(f"--model {spec!r}: {attr}() returned {type(model).__name__}, not a torch.nn.Module")
    return model


def load_model(
    spec: str | nn.Module,
    weights: str | None = None,
    normalize: str | None = None,
) -> tuple[nn.Module, Preprocess]:
    """The model named by ``spec`` in eval mode, and its preprocessing.

    - ``torchvision:NAME`` with ``weights`` ``DEFAULT`` (downloads), ``none``
      (random init), an enum name, or a PATH (state_dict or checkpoint dict);
      preprocessing defaults to the weights' (ImageNet statistics).
    - ``path/to/file.py:factory`` or ``package.module:factory``: a callable
      returning an ``nn.Module``; ``weights`` PATH is loaded into it;
      preprocessing defaults to none (RGB in [0, 1]).
    - ``zoo:NAME``: a model bundled with netdissect (``netdissect zoo`` lists them); ``weights="none"``
      gives the same architecture untrained, with the same preprocessing.

    ``normalize`` (``imagenet``, ``none``, ``MEAN,STD``) overrides the default.
    """
    if isinstance(spec, nn.Module):
        model, prep = spec, Preprocess()
    elif not isinstance(spec, str) or ":" not in spec:
        raise ModelError(
            f"--model {spec!r}: expected torchvision:NAME, zoo:NAME, path/to/file.py:factory or package.module:factory"
        )
    else:
        kind, _, rest = spec.partition(":")
        if kind == "torchvision":
            model, prep = _torchvision(rest, weights)
            weights = None
        elif kind == "zoo":
            from netdissect.models.zoo import build, load_zoo_model

            model, meta = load_zoo_model(rest)
            norm = meta.get("normalize")
            prep = Preprocess(tuple(norm["mean"]), tuple(norm["std"])) if norm else Preprocess()
            if weights and weights.lower() == "none":  # the same architecture, untrained (torch's default init)
                model = build(rest)
            weights = None
        else:
            model, prep = _factory(spec), Preprocess()
    if weights and weights.lower() not in ("none", "default"):
        _apply_state_dict(model, load_state_dict(weights), weights)
    prep = parse_normalize(normalize, prep)
    return model.eval(), prep


def model_identity(model: nn.Module) -> str:
    """A short hash of a model's parameters and buffers (for summary.json and resume checks)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        t = t.detach().cpu().contiguous()
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).clone().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]
