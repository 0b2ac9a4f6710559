"""PNG / JPEG / TIFF / BMP -> a :class:`~raddiag.data.volume.Volume` of ``[H, W]`` frames (one
per TIFF page or animated-PNG frame), decoded with Pillow one frame at a time. Grey 8- and 16-bit
frames keep their values (either byte order); colour is made grey with PIL's "L" weights.
The size is checked against :class:`~raddiag.data.volume.Limits` before any pixel is decoded."""
from __future__ import annotations

import warnings
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from raddiag.data.errors import InputTooLarge, ScanError
from raddiag.data.volume import Limits, Volume


def open_image(path: Path, limits: Limits) -> Volume:
    """PNG / JPEG / TIFF; multi-frame images (TIFF pages, animated PNG) give one slice per frame.
    The size is checked before decoding; PIL's decompression-bomb warning is an error."""
    from PIL import Image

    stack = ExitStack()
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = stack.enter_context(Image.open(path))
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise InputTooLarge(path, f"over PIL's decompression-bomb limit ({exc})") from None
    try:
        w, h = im.size
        frames = int(getattr(im, "n_frames", 1) or 1)
        limits.check(path, (frames, h, w))
        if Image.MAX_IMAGE_PIXELS and w * h > Image.MAX_IMAGE_PIXELS:
            raise InputTooLarge(path, f"{w * h:,} pixels is over PIL's decompression-bomb limit")
    except BaseException:
        stack.close()
        raise

    def get(k: int) -> np.ndarray:
        if frames > 1:
            im.seek(k)
            if im.size != (w, h):
                raise ScanError(path, "its frames have different sizes")
        im.load()
        # 16-bit in either byte order as is: convert("L") would clip an "I;16B" TIFF to 0..255
        frame = im if im.mode in ("L", "I", "F") or im.mode.startswith("I;16") else im.convert("L")
        return _frame_array(frame)

    return Volume(path, (frames, h, w), get, stack=stack)


def _frame_array(frame, band: int = 512) -> np.ndarray:
    """A PIL image as ``[H, W]`` in its own dtype (a 16-bit frame is not made float32), ``band``
    rows at a time: ``np.asarray(frame)`` holds two full-size byte strings besides the array."""
    w, h = frame.size
    out = None
    for top in range(0, h, band):
        rows = np.asarray(frame.crop((0, top, w, min(h, top + band))))
        out = np.empty((h, w), rows.dtype.newbyteorder("=")) if out is None else out
        out[top: top + len(rows)] = rows
    return out
