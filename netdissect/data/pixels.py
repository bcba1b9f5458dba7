"""Any PIL image as 8-bit RGB, deep greyscale scaled by its mode's range.

    >>> import numpy as np
    >>> from PIL import Image
    >>> grey16 = Image.fromarray(np.full((2, 2), 32896, np.uint16))     # mid-grey, 16 bits
    >>> grey16.mode, np.asarray(grey16.convert("RGB"))[0, 0, 0], np.asarray(to_rgb(grey16))[0, 0, 0]
    ('I;16', np.uint8(255), np.uint8(128))

PIL's ``convert("RGB")`` clips 16- and 32-bit greyscale (modes ``I;16*`` and ``I``) at 255, so a
16-bit photo reads almost white; here they are scaled from 0..65535 to 0..255 (16-bit PNG and TIFF
files open as ``I;16`` or ``I``), and float images (``F``) from [0, 1].
"""
from __future__ import annotations

import numpy as np
from PIL import Image

_DEEP = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535, "F": 1.0}


def to_rgb(im: Image.Image) -> Image.Image:
    """``im`` as an 8-bit RGB image (see the module's text)."""
    if im.mode == "RGB":
        return im
    top = _DEEP.get(im.mode)
    if top is None:
        return im.convert("RGB")
    a = np.asarray(im, dtype=np.float64)
    a = np.nan_to_num(a, nan=0.0, posinf=top, neginf=0.0)
    a8 = np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8)
    return Image.fromarray(a8, "L").convert("RGB")
