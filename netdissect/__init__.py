"""netdissect: what the hidden units of vision networks detect, and what they do.

    >>> from netdissect import dissect, load
    >>> result = dissect(model, layers=["layer4"], dataset="path/to/broden1_224")  # doctest: +SKIP
    >>> result["layer4"].units.head()                                             # doctest: +SKIP
"""
__version__ = "0.1.0"

from netdissect.errors import NetDissectError  # noqa: E402

__all__ = ["dissect", "load", "NetDissectError", "__version__"]


def __getattr__(name):
    # Lazy imports keep `import netdissect` and `netdissect --help` fast.
    if name == "dissect":
        from netdissect.dissection import dissect

        return dissect
    if name == "load":
        from netdissect.dissection import load

        return load
    raise AttributeError(name)
