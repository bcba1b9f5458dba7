"""Bundled scene classifiers trained on the synthetic world (``zoo:NAME`` models).

    >>> from netdissect.models.zoo import load_zoo_model, list_zoo
    >>> [m["name"] for m in list_zoo()][:2]
    ['scene-cnn', 'scene-cnn-bn']
    >>> model, meta = load_zoo_model("scene-cnn")          # eval mode, float32
    >>> meta["layers"], meta["input_size"], meta["normalize"]["mean"]
    (['conv1', 'conv2', 'conv3', 'conv4', 'conv5'], 112, [0.5, 0.5, 0.5])

Weights are ``weights/<name>.safetensors`` inside this package (stored as
float16, loaded as float32; the header's ``netdissect_zoo`` metadata holds
the training record), with a model card ``weights/<name>.md`` beside each.
A model listed in the registry whose weights are not bundled is rebuilt by
``python scripts/train_zoo.py NAME``; loading it raises a ModelError that
says so.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from netdissect.errors import ModelError
from netdissect.models.zoo.arch import SceneCNN
from netdissect.models.zoo.registry import LAYERS, ZOO, ZooEntry

WEIGHTS_DIR = Path(__file__).parent / "weights"
META_KEY = "netdissect_zoo"

__all__ = ["SceneCNN", "ZOO", "load_zoo_model", "list_zoo", "build", "weights_path", "read_meta",
           "GENERATORS", "build_generator", "load_zoo_generator", "list_generators", "generator_weights_path"]

# Bundled generators (``zoo:NAME`` too, dissected on latent samples): architecture and how to rebuild them.
# The weights file's safetensors metadata "recipe" (JSON) repeats resolution, sizes and z_dim.
GENERATORS = {
    "world-gan": {"description": "64 px progressive-GAN generator of the synthetic world's scenes (PNAS architecture)",
                  "resolution": 64, "sizes": [256, 128, 64, 32, 16], "z_dim": 128,
                  "train_command": "python scripts/train_world_gan.py && python scripts/finetune_world_gan.py"},
}


def _entry(name: str) -> ZooEntry:
    if name not in ZOO:
        raise ModelError(f"unknown zoo model {name!r}; the zoo has: {', '.join(ZOO)} (see `netdissect zoo`)")
    return ZOO[name]


def weights_path(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.safetensors"


def generator_weights_path(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.safetensors"


def _generator_entry(name: str) -> dict:
    if name not in GENERATORS:
        raise ModelError(f"unknown zoo generator {name!r}; the zoo's generators: {', '.join(GENERATORS)}")
    return GENERATORS[name]


def build_generator(name: str, recipe: dict | None = None):
    """An untrained :class:`~netdissect.models.proggan.ProgressiveGenerator` of zoo generator ``name``
    (sizes from ``recipe``, the weights file's record, when given)."""
    from netdissect.models.proggan import ProgressiveGenerator

    arch = {**_generator_entry(name), **{k: v for k, v in (recipe or {}).items()
                                         if k in ("resolution", "sizes", "z_dim")}}
    return ProgressiveGenerator(int(arch["resolution"]), [int(v) for v in arch["sizes"]], int(arch["z_dim"]))


def read_generator_recipe(path: Path) -> dict:
    """A generator weights file's header: ``recipe`` (the training recipe), ``netdissect_zoo`` (the zoo
    record, when written) and ``arch`` (resolution, sizes, z_dim read from them)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except FileNotFoundError:
        raise ModelError(f"{path}: weights file not found") from None
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ModelError(f"{path}: not a readable safetensors file ({exc})") from None
    out = {}
    for key in ("recipe", META_KEY):
        try:
            out[key] = json.loads(meta.get(key, "{}"))
        except json.JSONDecodeError as exc:
            raise ModelError(f"{path}: corrupt {key!r} metadata ({exc})") from None
    # the architecture: the zoo record ("netdissect_zoo") when the file has one, else the training recipe
    out["arch"] = {k: v for src in (out["recipe"], out[META_KEY]) for k, v in src.items()
                   if k in ("resolution", "sizes", "z_dim")}
    return out


def load_zoo_generator(name: str):
    """Zoo generator ``name`` with its bundled weights (stored float16, loaded as float32), in eval mode."""
    from safetensors.torch import load_file

    entry = _generator_entry(name)
    path = generator_weights_path(name)
    if not path.exists():
        raise ModelError(f"zoo generator {name!r} has no bundled weights ({path}); "
                         f"train them with `{entry['train_command']}`")
    record = read_generator_recipe(path)
    model = build_generator(name, record["arch"])
    try:
        state = {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(str(path)).items()}
        model.load_state_dict(state)
    except Exception as exc:
        raise ModelError(f"{path}: weights do not fit zoo generator {name!r} ({' '.join(str(exc).split())[:300]})") from None
    return model.eval()


def list_generators() -> list[dict]:
    """One dict per zoo generator (the fields of :func:`list_zoo`, ``kind: generator``, accuracy None)."""
    out = []
    for name, entry in GENERATORS.items():
        path = generator_weights_path(name)
        recipe = {}
        if path.exists():
            try:
                recipe = read_generator_recipe(path)["arch"]
            except ModelError:
                recipe = {}
        g = build_generator(name, recipe)
        out.append({"name": name, "kind": "generator", "description": entry["description"],
                    "params": sum(p.numel() for p in g.parameters()), "accuracy": None,
                    "layers": g.layer_names, "resolution": g.resolution, "z_dim": g.z_dim,
                    "available": path.exists(), "weights": str(path), "card": str(card_path(name)),
                    "train_command": entry["train_command"],
                    "size_bytes": path.stat().st_size if path.exists() else None})
    return out


def card_path(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.md"


def build(name: str, world: int | None = None) -> SceneCNN:
    """An untrained model with the architecture of zoo entry ``name``, with one output per scene class of
    synthetic world version ``world`` (default: the recipe's, world 1 unless it says otherwise)."""
    from netdissect.data.synth.worlds import get_world

    entry = _entry(name)
    arch = entry.arch
    scenes = get_world(world if world is not None else entry.train.get("world", 1)).scenes
    return SceneCNN(num_classes=len(scenes), widths=tuple(arch["widths"]), batchnorm=arch["batchnorm"],
                    dropout=arch["dropout"], head=arch["head"], hidden=arch["hidden"])


def read_meta(path: Path) -> dict:
    """The training record stored in a zoo weights file's header."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except FileNotFoundError:
        raise ModelError(f"{path}: weights file not found") from None
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ModelError(f"{path}: not a readable safetensors file ({exc})") from None
    if raw is None:
        raise ModelError(f"{path}: no {META_KEY!r} metadata in the header (not a zoo weights file)")
    return json.loads(raw)


def file_record(path) -> dict | None:
    """The training record in a zoo-format weights file (a ``.safetensors`` with the zoo's metadata), else None."""
    import os

    if path is None or not str(path).endswith(".safetensors") or not os.path.isfile(path):
        return None
    try:
        return read_meta(Path(path))
    except (ModelError, ValueError):
        return None


def record_world(record: dict) -> int:
    """The synthetic-world version a zoo training record was trained on (records before versions: 1)."""
    return int(record.get("world", (record.get("train") or {}).get("world", 1)))


def load_zoo_model(name: str) -> tuple[torch.nn.Module, dict]:
    """``(model in eval mode, meta)`` for zoo model ``name``.

    meta: ``name``, ``normalize`` ({mean, std} for images scaled to [0, 1]),
    ``input_size``, ``classes``, ``accuracy`` (held-out), ``layers``,
    ``card`` and ``weights`` paths, and the training record.
    """
    from safetensors.torch import load_file

    entry = _entry(name)
    path = weights_path(name)
    if not path.exists():
        raise ModelError(f"zoo model {name!r} has no bundled weights ({path}); "
                         f"rebuild them with `{entry.train_command}`")
    record = read_meta(path)
    model = build(name, record_world(record))
    try:
        state = {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(str(path)).items()}
        model.load_state_dict(state)
    except Exception as exc:
        raise ModelError(f"{path}: weights do not fit zoo model {name!r} ({exc})") from None
    model.eval()
    meta = {**record, "world": record_world(record), "name": name, "layers": list(LAYERS), "card": str(card_path(name)), "weights": str(path)}
    return model, meta


def list_zoo() -> list[dict]:
    """One dict per zoo model: name, description, params, accuracy (None if not bundled), ..."""
    out = []
    for name, entry in ZOO.items():
        path = weights_path(name)
        record = read_meta(path) if path.exists() else {}
        params = sum(p.numel() for p in build(name).parameters())
        out.append({"name": name, "description": entry.description, "params": params,
                    "accuracy": record.get("accuracy"), "layers": list(LAYERS), "available": path.exists(),
                    "weights": str(path), "card": str(card_path(name)), "train_command": entry.train_command,
                    "size_bytes": path.stat().st_size if path.exists() else None})
    return out
