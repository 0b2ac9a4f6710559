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

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


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
        _check_depth(path, im)
        orientation = _orientation(path, im)
    except BaseException:
        stack.close()
        raise

    def get(k: int) -> np.ndarray:
        if frames > 1:
            im.seek(k)
            _check_depth(path, im)
            _orientation(path, im)
            if im.size != (w, h):
                raise ScanError(path, "its frames have different sizes")
        im.load()
        # 16-bit in either byte order as is: convert("L") would clip an "I;16B" TIFF to 0..255
        frame = im if im.mode in _KEPT_MODES else im.convert("L")
        arr = _frame_array(frame)
        return _UPRIGHT[orientation](arr) if orientation in _UPRIGHT else arr

    shape = (frames, w, h) if orientation in _TURNED else (frames, h, w)
    return Volume(path, shape, get, stack=stack)


# EXIF orientation (tag 0x0112) -> the stored [H, W] frame made upright, as ImageOps.exif_transpose
_UPRIGHT = {2: np.fliplr, 3: lambda a: a[::-1, ::-1], 4: np.flipud, 5: np.transpose,
            6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].T, 8: lambda a: np.rot90(a, 1)}
_TURNED = (5, 6, 7, 8)   # these swap height and width


def _orientation(path, im) -> int:
    """The EXIF orientation the frames of ``im`` still need (1: upright as stored). Pillow orients
    a TIFF itself when it loads it (and gives wrong pixels for a non-square one turned by 90
    degrees: refused); a JPEG or PNG comes as stored."""
    orientation = im.getexif().get(0x0112, 1)
    if orientation not in _UPRIGHT:
        return 1
    if im.format == "TIFF":
        if orientation in _TURNED and im.size[0] != im.size[1]:
            raise ScanError(path, f"EXIF orientation {orientation} (turned by 90 degrees) on a non-square TIFF: "
                                  "Pillow decodes it wrongly; save the pixels upright (orientation 1)")
        return 1
    return orientation


_KEPT_MODES = ("L", "I", "F", "I;16", "I;16L", "I;16B", "I;16N")   # read as stored, not through "L"


def _check_depth(path, im) -> None:
    """Pillow decodes 16-bit colour (RGB, RGBA, grey + alpha) PNG and TIFF to their top 8 bits,
    with nothing said: such a file is refused (16-bit grey is read whole)."""
    if im.mode in _KEPT_MODES:
        return
    bits = 8
    if im.format == "PNG":
        with open(path, "rb") as f:
            head = f.read(26)
        bits = head[24] if len(head) == 26 else 8   # IHDR bit depth
    elif im.format == "TIFF":
        per_sample = im.tag_v2.get(258, (8,))
        bits = max(per_sample) if isinstance(per_sample, tuple) else int(per_sample)
    if bits > 8:
        raise ScanError(path, f"stores {bits}-bit {im.mode} samples, which Pillow cuts to 8 bits; "
                              "save it as 16-bit greyscale (or as 8-bit colour)")


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
