"""Arguments shared by several commands."""


def _seed(text: str) -> int:
    import argparse

    from netdissect.errors import ModelError
    from netdissect.models.loading import check_seed

    try:
        return check_seed(int(text))
    except (ValueError, ModelError):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number from 0 to 2**64-1") from None


def sizes_arg(text: str) -> list[int]:
    """``--sizes 1,2,4``: a comma list of whole numbers >= 1."""
    import argparse

    try:
        out = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes must be a comma list of whole numbers, got {text!r}") from None
    if not out or any(n < 1 for n in out):
        raise argparse.ArgumentTypeError(f"--sizes must be whole numbers >= 1, got {text!r}")
    return out


def positive_int(text: str) -> int:
    """A whole number >= 1."""
    import argparse

    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return v


def add_model_args(p) -> None:
    p.add_argument("--model", required=True,
                   help="torchvision:NAME | zoo:NAME | timm:NAME | hf:REPO_OR_PATH | open_clip:ARCH/PRETRAINED | "
                   "path/to/file.py:factory | package.module:factory")
    p.add_argument("--weights", default=None,
                   help="torchvision, timm, hf, open_clip: DEFAULT (download), none (random), or a PATH (torchvision: "
                   "also an enum name); "
                   "zoo: omitted (bundled), none (untrained architecture) or a PATH; others: a PATH to load. "
                   "A PATH is a .safetensors file or a torch checkpoint ('module.' prefixes are stripped)")
    p.add_argument("--normalize", default=None,
                   help="imagenet | none | MEAN,STD (default: the weights' own for torchvision and zoo, else none)")
    p.add_argument("--seed", type=_seed, default=0,
                   help="seed of random initialisation (--weights none, a factory's own init), "
                   "so two runs build the same network; recorded in summary.json (default 0)")


def _layout(text: str) -> tuple[str, str]:
    import argparse

    from netdissect.hooks.tokens import KINDS

    name, sep, kind = text.rpartition("=")
    if not sep or not name or kind not in KINDS:
        raise argparse.ArgumentTypeError(f"--layout {text!r}: expected LAYER=KIND with KIND one of {', '.join(KINDS)}")
    return name, kind


def add_token_args(p) -> None:
    """``--prefix-tokens N`` and ``--layout LAYER=KIND`` (token layers: docs/transformers.md)."""
    import argparse

    def count(text):
        try:
            v = int(text)
        except ValueError:
            v = -1
        if v < 0:
            raise argparse.ArgumentTypeError(f"--prefix-tokens {text!r}: expected a whole number >= 0")
        return v

    p.add_argument("--prefix-tokens", type=count, default=None, metavar="N",
                   help="token layers: the class/distillation/register tokens before the patch tokens, where "
                   "the model does not say (timm, torchvision, Hugging Face and open_clip models do)")
    p.add_argument("--layout", type=_layout, action="append", default=None, metavar="LAYER=KIND",
                   help="a layer's output layout where its shape leaves it open: nchw, nhwc (channels last), "
                   "tokens (N, T, C) or tokens-seq (T, N, C)")
