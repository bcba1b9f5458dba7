"""Model specs of the vision libraries people use for transformers: ``timm:NAME``,
``hf:REPO_OR_PATH`` (Hugging Face transformers) and ``open_clip:ARCH/PRETRAINED``.

Each is an optional extra (``pip install 'netdissect[timm]'``, ``[hf]``, ``[clip]``); a missing
package is one line naming the extra.  Each reads its preprocessing (input size, mean and std,
interpolation) from the library's own configuration (:class:`~netdissect.models.loading.Preprocess`
records it).  ``--weights``: ``DEFAULT`` (the library's pretrained weights, downloaded on first use),
``none`` (random initialisation from the library's config, seeded), or a PATH.  A download that
fails is one line naming the hub id or URL and the remedies.

A Hugging Face model is wrapped so that it is called as ``model(x)`` and returns logits (a model
without a classification head: its pooled output), under its own layer names
(``vit.layers.8``); an open_clip model is its visual tower (``visual.transformer.resblocks.9``),
returning the image embedding.  ``model_kwargs`` (Python API) are passed to the library's builder
(timm ``create_model`` keywords; Hugging Face config fields; open_clip ``create_model`` keywords),
e.g. to build a small random model from a library's config.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from netdissect.errors import ModelError

PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
EXTRAS = {"timm": ("timm", "timm"), "hf": ("transformers", "hf"), "open_clip": ("open_clip", "clip")}


def _require(kind: str):
    module, extra = EXTRAS[kind]
    try:
        return __import__(module)
    except ImportError as exc:
        raise ModelError(f"--model {kind}:... needs the {module} package, which is not installed "
                         f"({type(exc).__name__}: {exc}): pip install 'netdissect[{extra}]'") from None


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _weights_kind(weights) -> str:
    w = (weights or "DEFAULT").strip()
    if w.lower() == "none":
        return "none"
    if w.upper() == "DEFAULT":
        return "default"
    return "path"


def _download_error(what: str, where: str, exc: BaseException, cache: str) -> ModelError:
    return ModelError(f"cannot download {what} from {where} ({type(exc).__name__}: {_one_line(exc)[:300]}): "
                      f"download it elsewhere and pass a local copy (--weights PATH, or hf:path/to/folder), or "
                      f"fill the cache folder {cache} on a machine that has access and copy it here; "
                      "--weights none gives random weights")


def _hf_cache() -> str:
    return os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface")), "hub")


# ---------------------------------------------------------------- timm

def load_timm(name: str, weights, seed: int, model_kwargs: dict | None = None):
    """``timm:NAME``: the model and its Preprocess (from timm's pretrained config of that model)."""
    from netdissect.models.loading import Preprocess, _apply_state_dict, load_state_dict, seeded

    timm = _require("timm")
    if not name:
        raise ModelError("timm: needs a model name, e.g. --model timm:vit_small_patch16_224 (timm.list_models())")
    kwargs = dict(model_kwargs or {})
    base = name.split(".")[0]
    if not timm.is_model(base):
        import difflib

        close = difflib.get_close_matches(base, timm.list_models(), n=5)
        raise ModelError(f"timm has no model {name!r}; close: {', '.join(close) or 'none'} (timm.list_models())")
    kind = _weights_kind(weights)
    if kind == "default":
        try:
            with seeded(seed):
                model = timm.create_model(name, pretrained=True, **kwargs)
        except (OSError, RuntimeError, ValueError) as exc:
            cfg = timm.models.get_pretrained_cfg(name) if hasattr(timm.models, "get_pretrained_cfg") else None
            hub = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
            url = getattr(cfg, "url", None) if cfg is not None else None
            if hub is None and url is None and "pretrained" in str(exc).lower():
                raise ModelError(f"timm:{name} has no pretrained weights ({_one_line(exc)[:200]}): pass --weights "
                                 "none for random weights, or a PATH") from None
            where = f"the Hugging Face Hub ({hub})" if hub else (url or "timm's source")
            raise _download_error(f"timm:{name} weights", where, exc, _hf_cache()) from None
    else:
        with seeded(seed):
            model = timm.create_model(name, pretrained=False, **kwargs)
        if kind == "path":
            _apply_state_dict(model, load_state_dict(weights.strip()), weights.strip())
    data = timm.data.resolve_data_config({}, model=model)
    size = tuple(int(v) for v in data["input_size"][1:])
    built = getattr(getattr(model, "patch_embed", None), "img_size", None)  # the size it was built for
    if built is not None and len(tuple(built)) == 2:
        size = tuple(int(v) for v in built)
    prep = Preprocess(tuple(float(v) for v in data["mean"]), tuple(float(v) for v in data["std"]),
                      size=size, interpolation=str(data.get("interpolation") or "bilinear"))
    return model, prep


# ---------------------------------------------------------------- Hugging Face

class HFVision(nn.Module):
    """A Hugging Face vision model called as ``model(x)``, returning logits (or, without a head, its
    pooled output).  It shares the wrapped model's submodules under their own names (``vit.layers.8``):
    hooks, ``state_dict`` and ``.to()`` see exactly the Hugging Face model's modules."""

    def __init__(self, model: nn.Module):
        super().__init__()
        if model._parameters or model._buffers:
            raise ModelError(f"{type(model).__name__} holds parameters outside its submodules; wrap it yourself")
        object.__setattr__(self, "hf_model", model)
        self._modules = model._modules  # the same submodules, the same names
        self.config = model.config

    def train(self, mode: bool = True):
        self.hf_model.training = mode
        return super().train(mode)

    def forward(self, x):
        out = self.hf_model(pixel_values=x)
        for key in ("logits", "image_embeds", "pooler_output", "last_hidden_state"):
            v = getattr(out, key, None)
            if isinstance(v, torch.Tensor):
                return v
        return out[0] if isinstance(out, (tuple, list)) else out


def _hf_prep(processor, config):
    from netdissect.models.loading import Preprocess

    size = None
    if processor is not None:
        s = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
        s = s or getattr(processor, "size", None)
        get = (lambda k: s.get(k) if isinstance(s, dict) else getattr(s, k, None))
        if s is not None and get("height") and get("width"):
            size = (int(get("height")), int(get("width")))
        elif s is not None and get("shortest_edge"):
            size = (int(get("shortest_edge")),) * 2
    if size is None:
        v = getattr(config, "image_size", None)
        size = (v, v) if isinstance(v, int) else (tuple(v) if v else None)
    mean = getattr(processor, "image_mean", None) if processor is not None else None
    std = getattr(processor, "image_std", None) if processor is not None else None
    do_norm = getattr(processor, "do_normalize", True) if processor is not None else False
    resample = getattr(processor, "resample", None) if processor is not None else None
    interp = PIL_RESAMPLE.get(int(resample), str(resample)) if isinstance(resample, int) else (
        str(resample).split(".")[-1].lower() if resample is not None else None)
    if mean is not None and do_norm:
        mean = tuple(float(v) for v in (mean if isinstance(mean, (list, tuple)) else [mean] * 3))
        std = tuple(float(v) for v in (std if isinstance(std, (list, tuple)) else [std] * 3))
        return Preprocess(mean, std, size=size, interpolation=interp)
    return Preprocess(size=size, interpolation=interp)


def load_hf(repo: str, weights, seed: int, model_kwargs: dict | None = None):
    """``hf:REPO_OR_PATH``: AutoModelForImageClassification where the config names a classification
    architecture, else AutoModel; wrapped in :class:`HFVision`.  Preprocessing from the repo's image
    processor (preprocessor_config.json), else none at the config's ``image_size``."""
    from netdissect.models.loading import _apply_state_dict, load_state_dict, seeded

    _require("hf")
    import transformers

    if not repo:
        raise ModelError("hf: needs a Hugging Face repo id or folder, e.g. --model hf:google/vit-base-patch16-224")
    local = os.path.isdir(repo) or repo.startswith((".", "/", "~")) or repo.count("/") > 1
    where = f"folder {repo}" if local else f"the Hugging Face Hub (https://huggingface.co/{repo})"
    kind = _weights_kind(weights)
    try:
        config = transformers.AutoConfig.from_pretrained(repo, **(model_kwargs or {}))
    except OSError as exc:
        if local:
            raise ModelError(f"hf:{repo}: no usable config.json in {repo} ({_one_line(exc)[:200]})") from None
        raise _download_error(f"hf:{repo} (its config)", where, exc, _hf_cache()) from None
    except ValueError as exc:
        raise ModelError(f"hf:{repo}: not a transformers model config ({_one_line(exc)[:200]})") from None
    archs = list(getattr(config, "architectures", None) or [])
    head = any(a.endswith("ForImageClassification") for a in archs)
    auto = transformers.AutoModelForImageClassification if head else transformers.AutoModel
    try:
        if kind == "default":
            try:
                model = auto.from_pretrained(repo, config=config)
            except OSError as exc:
                raise _download_error(f"hf:{repo} weights", where, exc, _hf_cache()) from None
        else:
            with seeded(seed):
                model = auto.from_config(config)
            if kind == "path":
                _apply_state_dict(model, load_state_dict(weights.strip()), weights.strip())
    except ValueError as exc:
        raise ModelError(f"hf:{repo}: transformers builds no vision model from this config "
                         f"({_one_line(exc)[:200]})") from None
    try:
        processor = transformers.AutoImageProcessor.from_pretrained(repo)
    except (OSError, ValueError, KeyError):
        processor = None  # no preprocessor_config.json: none, at the config's image size
    return HFVision(model.eval()), _hf_prep(processor, config)


# ---------------------------------------------------------------- open_clip

class ClipVisual(nn.Module):
    """An open_clip model's visual tower, under the name ``visual`` (``visual.transformer.resblocks.9``);
    ``model(x)`` is the image embedding."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual

    def forward(self, x):
        return self.visual(x)


def load_open_clip(spec: str, weights, seed: int, model_kwargs: dict | None = None):
    """``open_clip:ARCH/PRETRAINED`` (``PRETRAINED`` an open_clip pretrained tag, e.g. openai): its visual
    tower and the preprocessing open_clip records for it."""
    from netdissect.models.loading import Preprocess, seeded

    open_clip = _require("open_clip")
    arch, _, tag = spec.partition("/")
    if not arch:
        raise ModelError("open_clip: needs ARCH/PRETRAINED, e.g. --model open_clip:ViT-B-32/openai "
                         "(open_clip.list_pretrained())")
    if arch not in open_clip.list_models():
        import difflib

        close = difflib.get_close_matches(arch, open_clip.list_models(), n=5)
        raise ModelError(f"open_clip has no model {arch!r}; close: {', '.join(close) or 'none'}")
    kind = _weights_kind(weights)
    pretrained = None
    if kind == "path":
        pretrained = weights.strip()
        if not os.path.isfile(pretrained):
            raise ModelError(f"weights file not found: {pretrained}")
    elif kind == "default":
        if not tag:
            raise ModelError(f"open_clip:{arch} names no pretrained weights: give open_clip:{arch}/TAG (tags: "
                             f"{', '.join(t for a, t in open_clip.list_pretrained() if a == arch)[:200] or 'none'}) "
                             "or --weights none")
        pretrained = tag
    import logging

    try:
        quiet = logging.getLogger().level
        if pretrained is None:  # open_clip logs a warning for random weights: asked for here
            logging.getLogger().setLevel(logging.ERROR)
        with seeded(seed):
            model = open_clip.create_model(arch, pretrained=pretrained, **(model_kwargs or {}))
    except RuntimeError as exc:
        if kind == "default" and ("pretrained" in str(exc).lower() or "not found" in str(exc).lower()):
            raise ModelError(f"open_clip:{arch}/{tag}: {_one_line(exc)[:300]} (open_clip.list_pretrained())") from None
        if kind != "default":
            raise ModelError(f"open_clip:{arch}: cannot load {pretrained or 'the model'}: {_one_line(exc)[:300]}") from None
        raise _download_error(f"open_clip:{arch}/{tag} weights", "the Hugging Face Hub / open_clip's URL", exc,
                              _hf_cache()) from None
    except OSError as exc:
        raise _download_error(f"open_clip:{arch}/{tag} weights", "the Hugging Face Hub / open_clip's URL", exc,
                              _hf_cache()) from None
    finally:
        logging.getLogger().setLevel(quiet)
    visual = model.visual
    cfg = dict(getattr(visual, "preprocess_cfg", None) or {})
    size = cfg.get("size") or getattr(visual, "image_size", None)
    size = (size, size) if isinstance(size, int) else (tuple(int(v) for v in size) if size else None)
    mean = tuple(float(v) for v in cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
    std = tuple(float(v) for v in cfg.get("std", open_clip.OPENAI_DATASET_STD))
    return ClipVisual(visual).eval(), Preprocess(mean, std, size=size, interpolation=cfg.get("interpolation", "bicubic"))


LOADERS = {"timm": load_timm, "hf": load_hf, "open_clip": load_open_clip}

__all__ = ["load_timm", "load_hf", "load_open_clip", "HFVision", "ClipVisual", "LOADERS"]
