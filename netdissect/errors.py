"""Exceptions with messages a user can act on.

Every error raised for bad input (a missing file, a corrupt image, an
unknown layer, wrong shapes, NaN activations) is a :class:`NetDissectError`
subclass whose message names the thing at fault.  The CLI prints the message
without a traceback.
"""


class NetDissectError(Exception):
    """Base class: a problem with the user's input or environment."""


class DatasetError(NetDissectError, ValueError):
    """A dataset file is missing, corrupt, or inconsistent (names file and row)."""


class LayerError(NetDissectError, KeyError):
    """A layer name that the model does not have, or a layer output of the wrong shape."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ModelError(NetDissectError, ValueError):
    """A model spec or weights file that cannot be loaded."""


class ActivationError(NetDissectError, ValueError):
    """Activations that cannot be dissected (NaN/inf, overflow of the cache dtype)."""


class DownloadError(NetDissectError, OSError):
    """A download that failed or did not verify."""
