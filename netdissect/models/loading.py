"""Load a model from a spec string, with its preprocessing."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import importlib
import importlib.util
import operator
import os
import pickle
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import torch
from torch import nn

from netdissect.errors import ModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_SEED = 0


class NoNormalizationWarning(UserWarning):
    """An ``nn.Module`` was given without ``normalize=``: its images arrive as RGB in [0, 1], unnormalised.

    Issued on every such :func:`load_model` call (so once per :func:`netdissect.dissect` call);
    Python's default warnings filter shows each distinct message once per calling line.
    Silence it by passing ``normalize`` explicitly (``"none"`` included).
    """


@dataclass(frozen=True)
class Preprocess:
    """How RGB images in [0, 1] are normalised before the model: ``(x - mean) / std``.

    ``mean``/``std`` None means the model takes RGB in [0, 1] as is.  ``size`` (H, W) and
    ``interpolation`` are the input size and resampling the model's library records for it (timm,
    Hugging Face, open_clip specs; None where nothing is recorded): a model that needs that size gets
    it with ``--size`` (docs/transformers.md).
    """

    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    size: tuple[int, int] | None = None
    interpolation: str | None = None

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


def nonfinite_rows(y: torch.Tensor) -> list[int]:
    """Rows (first axis) of ``y`` holding a NaN or an infinity; [] when every value is finite (one sum
    in the common case: a NaN or an infinity makes the sum one; a sum that overflows is checked exactly)."""
    if bool(torch.isfinite(y.detach().sum())):
        return []
    return (~torch.isfinite(y.detach()).flatten(1).all(1)).nonzero().flatten().tolist()


def check_generated(y: torch.Tensor, rows=None, what: str = "the generator") -> None:
    """Refuse a generator output with NaN or infinite values (clamped, they would be black or white
    images labelled, served and counted as real ones): one line naming the rows (``rows[i]`` names
    row i of the batch, e.g. sample numbers)."""
    bad = nonfinite_rows(y)
    if bad:
        from netdissect.errors import ActivationError

        names = [rows[i] if rows is not None else i for i in bad]
        which = "sample(s)" if rows is not None else "row(s) of the batch"
        raise ActivationError(f"{what} gives NaN or infinite values for {len(bad)} {which}: {names[:8]}"
                              f"{' ...' if len(bad) > 8 else ''}; no image is made from them (check its weights, "
                              "or the edit's value)")


@dataclass(frozen=True)
class GeneratorIO:
    """A generator's conventions, carried as its "preprocessing" by :func:`load_model`.

    Its input is a latent batch ``z`` of shape (N, ``z_dim``), passed as is (``gen_io(z) is z``);
    its output is an image batch normalised with ``output`` (a :class:`Preprocess`): the same
    ``--normalize`` syntax as for a classifier, read the other way round.  A classifier's input is
    ``(rgb - mean) / std``; a generator's output is taken to be that, so
    ``to_image(y) = clamp(y * std + mean, 0, 1)`` is the RGB image in [0, 1] the segmenter sees.
    The default ``0.5,0.5`` is ``(y + 1) / 2`` clamped (outputs in about [-1, 1], as Progressive GAN
    and most GANs have them: :func:`netdissect.models.proggan.to_image`); ``none``: the outputs are RGB
    in [0, 1] already (only clamped).
    """

    z_dim: int
    output: Preprocess = Preprocess((0.5,) * 3, (0.5,) * 3)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def to_image(self, y: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1]: ``clamp(y * std + mean, 0, 1)``, in float32."""
        y = y.float()
        if self.output.mean is None:
            return y.clamp(0, 1)
        if set(self.output.mean) == {0.5} and set(self.output.std) == {0.5}:
            from netdissect.models.proggan import to_image

            return to_image(y)
        mean = torch.tensor(self.output.mean, dtype=y.dtype, device=y.device).view(1, 3, 1, 1)
        std = torch.tensor(self.output.std, dtype=y.dtype, device=y.device).view(1, 3, 1, 1)
        return (y * std + mean).clamp_(0, 1)

    def describe(self) -> str:
        """``generator output <normalize>`` (e.g. ``generator output 0.5,0.5,0.5,0.5,0.5,0.5``)."""
        return f"generator output {self.output.describe()}"


def is_generator(prep) -> bool:
    """Whether ``prep`` (the second value :func:`load_model` returns) is a generator's."""
    return isinstance(prep, GeneratorIO)


GENERATOR_DEFAULT_OUTPUT = Preprocess((0.5,) * 3, (0.5,) * 3)


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


def check_seed(seed) -> int:
    """``seed`` as an int torch accepts (0 .. 2**64 - 1), or a ModelError naming it."""
    try:
        value = operator.index(seed)
    except TypeError:
        value = None
    if isinstance(seed, bool) or value is None or not 0 <= value < 2**64:
        raise ModelError(f"--seed {seed!r}: expected a whole number from 0 to 2**64-1 (default {DEFAULT_SEED})")
    return int(value)


@contextlib.contextmanager
def seeded(seed: int):
    """Run the block with torch's CPU generator (and CUDA's, once initialised) seeded with ``seed``,
    and give the caller's generator states back afterwards: random initialisation inside is
    reproducible and the caller's own random stream is not advanced."""
    seed = check_seed(seed)
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    devices = list(range(torch.cuda.device_count())) if cuda else []
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(seed)
        for d in devices:
            torch.cuda.default_generators[d].manual_seed(seed)
        yield


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _hub_cache(url: str) -> Path:
    from urllib.parse import urlparse

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _fetch_error(name: str, wobj, exc: BaseException) -> ModelError | None:
    """The one-line error for a failed fetch of torchvision weights ``wobj``, or None when
    ``exc`` is not about fetching or reading the weights file."""
    url = getattr(wobj, "url", "?")
    cache = _hub_cache(url)
    where = (f"download {url} elsewhere and pass it with --weights PATH, or put it in {cache.parent}/ "
             f"(TORCH_HOME chooses that folder); --weights none gives random weights")
    label = f"torchvision:{name} weights {wobj}"
    if isinstance(exc, (URLError, ConnectionError, TimeoutError, http.client.HTTPException)):
        reason = _one_line(getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}")
        return ModelError(f"cannot download {label} from {url} ({reason}): {where}")
    if isinstance(exc, RuntimeError) and "invalid hash value" in str(exc):
        return ModelError(f"the file downloaded for {label} from {url} is not the published one "
                          f"({_one_line(exc)}; cut off, or a proxy's page?): {where}")
    if isinstance(exc, OSError):
        return ModelError(f"cannot store {label} in {cache.parent} ({type(exc).__name__}: {_one_line(exc)}): "
                          f"set TORCH_HOME to a writable folder, or pass a local file with --weights PATH")
    if isinstance(exc, (RuntimeError, EOFError, pickle.UnpicklingError, ValueError)) and cache.is_file():
        try:  # is the cached file itself unreadable, or did something else fail?
            torch.load(cache, map_location="cpu", weights_only=True)
        except Exception as why:
            msg = str(why).strip().splitlines()[-1] if str(why).strip() else type(why).__name__
            return ModelError(f"the cached weights file {cache} for {label} is unreadable ({msg}): "
                              f"delete it to download it again, or pass a local file with --weights PATH")
    return None


def _torchvision(name: str, weights: str | None, seed: int) -> tuple[nn.Module, Preprocess]:
    import torchvision

    if name not in torchvision.models.list_models():
        import difflib

        close = difflib.get_close_matches(name, torchvision.models.list_models(), n=5)
        raise ModelError(f"torchvision has no model {name!r}; close: {', '.join(close) or 'none'}")
    w = (weights or "DEFAULT").strip()
    imagenet = Preprocess(IMAGENET_MEAN, IMAGENET_STD)
    if w.lower() == "none":
        with seeded(seed):
            model = torchvision.models.get_model(name, weights=None)
        size = getattr(model, "image_size", None)  # a VisionTransformer takes only this size
        return model, (dataclasses.replace(imagenet, size=(size, size)) if isinstance(size, int) else imagenet)
    if _is_path(w):
        sd = load_state_dict(w)
        kwargs = {}
        n = _num_classes(sd)
        if n is not None:
            kwargs["num_classes"] = n  # Places365 checkpoints have 365 classes
        with seeded(seed):
            model = torchvision.models.get_model(name, weights=None, **kwargs)
        _apply_state_dict(model, sd, w)
        return model, imagenet
    wobj = _weights_enum(name, w)
    try:
        with seeded(seed):
            model = torchvision.models.get_model(name, weights=wobj)  # downloads on first use
    except Exception as exc:
        err = _fetch_error(name, wobj, exc)
        if err is None:
            raise
        raise err from None
    tf = wobj.transforms()
    prep = Preprocess(tuple(tf.mean), tuple(tf.std)) if hasattr(tf, "mean") else imagenet
    size = getattr(model, "image_size", None)  # a VisionTransformer takes only this size
    if isinstance(size, int):
        interp = getattr(getattr(tf, "interpolation", None), "value", None)
        prep = dataclasses.replace(prep, size=(size, size), interpolation=interp)
    return model, prep


def _is_path(w: str) -> bool:
    return os.path.exists(w) or w.endswith((".pth", ".pt", ".tar", ".safetensors", ".bin", ".ckpt")) or os.sep in w


def _weights_enum(name: str, w: str):
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(name)
        return enum.DEFAULT if w.upper() == "DEFAULT" else enum[w]
    except (KeyError, ValueError):
        raise ModelError(f"unknown weights {w!r} for torchvision:{name} "
                         "(use DEFAULT, none, a weights enum name, or a file)") from None


def _zoo(name: str, weights: str | None, seed: int) -> tuple[nn.Module, Preprocess]:
    from netdissect.models.zoo import build, file_record, load_zoo_model, read_meta, record_world, weights_path

    w = (weights or "DEFAULT").strip()
    if w.upper() == "DEFAULT":
        model, meta = load_zoo_model(name)
    else:
        rec = file_record(w) if w.lower() != "none" else None  # a zoo-format file: its world's classes
        with seeded(seed):
            model = build(name, record_world(rec) if rec else None)  # untrained, or for the file's weights
        path = weights_path(name)
        meta = rec or (read_meta(path) if path.exists() else {})
        if w.lower() != "none":
            if not os.path.isfile(w):
                raise ModelError(f"zoo:{name} --weights {w!r}: no such file (zoo models take no --weights "
                                 "for the bundled weights, none for the untrained architecture, or a PATH)")
            _apply_state_dict(model, load_state_dict(w), w)
    norm = meta.get("normalize")
    if norm is None:  # the twin of a model whose weights are not bundled: the recipe's normalisation
        from netdissect.data.synth import NORMALIZE as norm
    return model, Preprocess(tuple(norm["mean"]), tuple(norm["std"]))


def _proggan(path: str, weights: str | None) -> nn.Module:
    """``proggan:PATH``: a published Progressive GAN generator file (either key layout)."""
    from netdissect.models.proggan import from_state_dict

    if weights is not None and weights.strip().lower() not in ("default",):
        raise ModelError(f"proggan:{path} takes its weights from the file named in the spec; drop --weights "
                         f"{weights!r} (or use --model file.py:factory --weights PATH for another architecture)")
    if not path:
        raise ModelError("proggan: needs a file: --model proggan:path/to/proggan_churchoutdoor-7e701dd5.pth")
    sd = load_state_dict(path)
    try:
        return from_state_dict(sd, source=path)
    except ModelError as exc:
        msg = str(exc)
        raise ModelError(msg if msg.startswith(path) else f"{path}: {msg}") from None
    except (RuntimeError, ValueError, IndexError, TypeError, ZeroDivisionError) as exc:
        # tensor sizes that do not fit the sizes read from layer1 / the odd layers, or values no generator has
        first = " ".join(str(exc).split())
        raise ModelError(f"{path}: a progressive-GAN state dict whose tensor sizes do not agree with each "
                         f"other ({first[:300]}): the file is damaged or not a published generator") from None


def _zoo_generator(name: str, weights: str | None, seed: int) -> nn.Module:
    from netdissect.models.zoo import build_generator, load_zoo_generator

    w = (weights or "DEFAULT").strip()
    if w.upper() == "DEFAULT":
        return load_zoo_generator(name)
    with seeded(seed):
        model = build_generator(name)
    if w.lower() != "none":
        if not os.path.isfile(w):
            raise ModelError(f"zoo:{name} --weights {w!r}: no such file (zoo models take no --weights "
                             "for the bundled weights, none for the untrained architecture, or a PATH)")
        sd = {k: (v.float() if v.is_floating_point() else v) for k, v in load_state_dict(w).items()}
        _apply_state_dict(model, sd, w)
    return model


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


def _stacklevel_outside_netdissect() -> int:
    """The ``stacklevel`` that points a warning at the first caller outside netdissect."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] == "netdissect":
        frame, level = frame.f_back, level + 1
    return level


def spec_name(spec) -> str:
    """How a model spec is named in messages and summary.json: the string, or ``python:ClassName``."""
    return spec if isinstance(spec, str) else f"python:{type(spec).__name__}"


def load_model(
    spec: str | nn.Module,
    weights: str | None = None,
    normalize: str | None = None,
    *,
    seed: int = DEFAULT_SEED,
    generator: bool | None = None,
    z_dim: int | None = None,
    model_kwargs: dict | None = None,
) -> tuple[nn.Module, Preprocess]:
    """The model named by ``spec`` in eval mode, and its preprocessing.

    - ``torchvision:NAME`` with ``weights`` ``DEFAULT`` (downloads), ``none``
      (random init), an enum name, or a PATH (state_dict or checkpoint dict);
      preprocessing defaults to the weights' (ImageNet statistics).
    - ``path/to/file.py:factory`` or ``package.module:factory``: a callable
      returning an ``nn.Module``; ``weights`` PATH is loaded into it;
      preprocessing defaults to none (RGB in [0, 1]).
    - ``zoo:NAME``: a model bundled with netdissect (``netdissect zoo`` lists them); ``weights``
      omitted or ``DEFAULT``: the bundled weights; ``none``: the same architecture untrained;
      a PATH: that file's weights in the same architecture. Preprocessing is the zoo's.
    - an ``nn.Module``: used as is (put in eval mode; ``weights`` PATH is loaded into it).
      Without ``normalize`` it gets none, with a :class:`NoNormalizationWarning`.

    A PATH is a ``.safetensors`` file or a torch checkpoint: a state_dict, or a dict holding one
    under ``state_dict``/``model_state_dict``/``model``; DataParallel's ``module.`` prefixes are
    stripped (as the Places365 releases need).

    ``seed`` (default 0) seeds torch's generator while the model is built, so random
    initialisation (``weights="none"``, a factory's own init) is the same in every run; the
    caller's global RNG state is left as it was.

    ``normalize`` (``imagenet``, ``none``, ``MEAN,STD``) overrides the default.

    Transformer libraries (optional extras; :mod:`netdissect.models.libraries`):
    ``timm:NAME``, ``hf:REPO_OR_PATH`` (Hugging Face transformers; called as ``model(x)``, returning
    logits) and ``open_clip:ARCH/PRETRAINED`` (the visual tower), each with ``weights`` ``DEFAULT``,
    ``none`` or a PATH, and preprocessing (mean/std, input size, interpolation) from the library's
    config.  ``model_kwargs`` go to the library's builder (e.g. ``depth=2`` for timm).

    Generators (PNAS 2020 "Role of units in a GAN"):

    - ``proggan:PATH``: a Progressive GAN generator file as the PNAS authors published them (a state
      dict, maybe under ``state_dict``, in either key layout; sizes read from the tensors).
    - ``zoo:world-gan``: the bundled generator of the synthetic world.
    - any other model with ``generator=True``: a module mapping z (N, ``z_dim``) to images
      (``z_dim`` from the argument, else the module's ``z_dim`` attribute).

    For a generator the second value is a :class:`GeneratorIO`: z is passed as is and ``normalize``
    names how its output is normalised (default ``0.5,0.5``: outputs in [-1, 1], RGB = (y + 1) / 2).
    ``generator=False`` refuses a generator, ``generator=True`` a classifier spec; None takes
    what the spec is.
    """
    seed = check_seed(seed)
    gen_kind = None
    if isinstance(spec, str) and spec.partition(":")[0] == "proggan":
        gen_kind = "proggan"
    elif isinstance(spec, str) and spec.startswith("zoo:"):
        from netdissect.models.zoo import GENERATORS

        if spec[4:] in GENERATORS:
            gen_kind = "zoo"
    elif isinstance(spec, nn.Module):
        from netdissect.models.proggan import ProgressiveGenerator

        if isinstance(spec, ProgressiveGenerator):
            gen_kind = "module"
    if gen_kind is not None or generator:
        if generator is False:
            raise ModelError(f"{spec_name(spec)} is a generator (z -> image): dissect it on latent samples "
                             "(--samples N --seed S with --segmenter SPEC; samples=N in Python), not on images")
        return _load_generator(spec, gen_kind, weights, normalize, seed, z_dim)
    if isinstance(spec, nn.Module):
        model, prep = spec, Preprocess()
        if isinstance(weights, str) and weights.strip().lower() in ("none", "default"):
            raise ModelError(f"weights={weights!r} for a Python module ({spec_name(spec)}): it keeps its own "
                             "weights; pass weights=None, or a PATH to load into it")
        if normalize is None:
            warnings.warn(
                f"{spec_name(spec)}: no normalize= given for a Python module, so its images are RGB in [0, 1] "
                "without normalisation; pass normalize='imagenet' (ImageNet mean and std), "
                "normalize='MEAN,STD' (e.g. '0.5,0.25') or normalize='none' to say so",
                NoNormalizationWarning, stacklevel=_stacklevel_outside_netdissect())
    elif not isinstance(spec, str) or ":" not in spec:
        raise ModelError(
            f"--model {spec!r}: expected torchvision:NAME, zoo:NAME, timm:NAME, hf:REPO_OR_PATH, open_clip:ARCH/PRETRAINED, "
            "path/to/file.py:factory or package.module:factory"
        )
    else:
        kind, _, rest = spec.partition(":")
        if kind == "torchvision":
            model, prep = _torchvision(rest, weights, seed)
            weights = None
        elif kind == "zoo":
            model, prep = _zoo(rest, weights, seed)
            weights = None
        elif kind in ("timm", "hf", "open_clip"):
            from netdissect.models.libraries import LOADERS

            model, prep = LOADERS[kind](rest, weights, seed, model_kwargs)
            weights = None
        else:
            with seeded(seed):
                model = _factory(spec)
            prep = Preprocess()
    if model_kwargs and not (isinstance(spec, str) and spec.partition(":")[0] in ("timm", "hf", "open_clip")):
        raise ModelError(f"model_kwargs apply to timm:, hf: and open_clip: specs, not {spec_name(spec)}")
    if weights and weights.strip().lower() not in ("none", "default"):
        _apply_state_dict(model, load_state_dict(weights), weights)
    parsed = parse_normalize(normalize, prep)
    if parsed is not prep:  # --normalize replaces mean and std; the input size and interpolation stay
        parsed = dataclasses.replace(parsed, size=prep.size, interpolation=prep.interpolation)
    return model.eval(), parsed


def _load_generator(spec, gen_kind, weights, normalize, seed, z_dim) -> tuple[nn.Module, GeneratorIO]:
    """The generator named by ``spec`` and its :class:`GeneratorIO` (see :func:`load_model`)."""
    default = GENERATOR_DEFAULT_OUTPUT
    if gen_kind == "proggan":
        model = _proggan(spec.partition(":")[2], weights)
        weights = None
    elif gen_kind == "zoo":
        model = _zoo_generator(spec[4:], weights, seed)
        weights = None
    elif isinstance(spec, nn.Module):
        model = spec
        if isinstance(weights, str) and weights.strip().lower() in ("none", "default"):
            raise ModelError(f"weights={weights!r} for a Python module ({spec_name(spec)}): it keeps its own "
                             "weights; pass weights=None, or a PATH to load into it")
        if normalize is None and gen_kind is None:
            warnings.warn(
                f"{spec_name(spec)}: no normalize= given for a generator module, so its outputs are taken to be "
                "in [-1, 1] (RGB = (y + 1) / 2, clamped); pass normalize='0.5,0.5' to say so, normalize='none' "
                "for outputs already in [0, 1], or normalize='MEAN,STD' (RGB = y * STD + MEAN)",
                NoNormalizationWarning, stacklevel=_stacklevel_outside_netdissect())
    elif isinstance(spec, str) and ":" in spec and spec.partition(":")[0] not in ("torchvision", "zoo"):
        with seeded(seed):
            model = _factory(spec)
    else:
        raise ModelError(f"--model {spec!r} is not a generator: latent samples (--samples) probe a generator "
                         "(proggan:PATH, zoo:world-gan, or file.py:factory returning one); use --dataset or "
                         "--images for a classifier")
    if weights and weights.strip().lower() not in ("none", "default"):
        _apply_state_dict(model, load_state_dict(weights), weights)
    dim = z_dim if z_dim is not None else getattr(model, "z_dim", None)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ModelError(f"{spec_name(spec)}: the size of its latent input is unknown: give z_dim=N (--z-dim N), "
                         "or give the module a z_dim attribute" if dim is None else
                         f"{spec_name(spec)}: z_dim must be a positive integer, got {dim!r}")
    if z_dim is not None and getattr(model, "z_dim", z_dim) != z_dim:
        raise ModelError(f"{spec_name(spec)} takes z of size {model.z_dim}, not --z-dim {z_dim}: drop --z-dim")
    return model.eval(), GeneratorIO(int(dim), parse_normalize(normalize, default))


def _file_sha256(path: Path, n: int = 8) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:n]


def describe_weights(spec: str | nn.Module, weights: str | None, seed: int = DEFAULT_SEED) -> str:
    """What :func:`load_model` loads for ``spec`` and ``weights``, in words, for summary.json and the report.

    >>> describe_weights("torchvision:resnet18", None)
    'torchvision DEFAULT (ResNet18_Weights.IMAGENET1K_V1)'
    >>> describe_weights("torchvision:resnet18", "none", seed=3)
    'random init, seed 3'
    >>> describe_weights("zoo:scene-cnn", None)[:29]
    'bundled zoo:scene-cnn (sha256'
    """
    w = weights.strip() if isinstance(weights, str) else None
    if w and w.lower() not in ("none", "default") and (not isinstance(spec, str) or not spec.startswith("torchvision:")
                                                       or _is_path(w)):
        return f"file {w}"
    if isinstance(spec, nn.Module):
        return f"as given ({spec_name(spec)})"
    kind, _, rest = str(spec).partition(":")
    if kind == "proggan":
        path = Path(rest)
        return f"file {rest} (sha256 {_file_sha256(path)}…)" if path.is_file() else f"file {rest}"
    if w is not None and w.lower() == "none" and kind in ("torchvision", "zoo", "timm", "hf", "open_clip"):
        return f"random init, seed {seed}"
    if kind in ("timm", "hf", "open_clip"):
        return f"{kind} pretrained ({rest})"
    if kind == "torchvision":
        w = w or "DEFAULT"
        try:
            wobj = _weights_enum(rest, w)
        except ModelError:
            return f"torchvision {w}"
        return f"torchvision {w} ({wobj})" if w.upper() == "DEFAULT" else f"torchvision {wobj}"
    if kind == "zoo":
        from netdissect.models.zoo import GENERATORS, generator_weights_path, weights_path

        path = generator_weights_path(rest) if rest in GENERATORS else weights_path(rest)
        digest = _file_sha256(path) if path.is_file() else "not bundled"
        return f"bundled {spec} (sha256 {digest}…)" if path.is_file() else f"bundled {spec} ({digest})"
    return f"as built by {spec} (torch seed {seed})"


def model_identity(model: nn.Module) -> str:
    """A short hash of a model's parameters and buffers (for summary.json and resume checks)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        t = t.detach().cpu().contiguous()
        h.update(str(t.dtype).encode())
        if t.numel():  # the tensor's own bytes, read in place (no copy: 86M weights of a ViT-B hash 3x faster)
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()[:16]
