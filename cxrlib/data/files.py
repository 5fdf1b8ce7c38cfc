"""Reading image files robustly: the decoding rules, the errors that name the file, and skipped rows.

Image decoding (:func:`read_image`), the cases of the bad-input corpus:

* 8-bit grayscale is used as is; RGB/CMYK/YCbCr become luma (ITU-R 601, PIL ``convert("L")``);
  an alpha channel (RGBA, LA, palette with transparency) is composited onto black (air), so a
  transparent pixel is 0; palette images are expanded through their palette; 1-bit become 0/255.
* 16-bit grayscale (``I;16``) is scaled linearly from the full range ``[0, 65535]`` to ``[0, 1]``
  and kept in float through the resize (a 12-bit image stored in 16 bits therefore looks dark:
  rescale such files before use).
* The image is center-cropped to a square (the shorter side) and resized with PIL's antialiased
  bilinear filter, as torchxrayvision's ``XRayCenterCrop`` + ``XRayResizer`` do.
* Errors, each an :class:`ImageReadError` naming the file: missing file, zero-byte file, a file PIL
  cannot identify (a non-image with an image extension), a truncated/corrupt file, a side shorter
  than ``min_side`` (e.g. a 1 x 1 image), more than ``max_pixels`` pixels (a decompression bomb:
  checked from the header before decoding), an unsupported mode (e.g. float TIFF).

``on_error="raise"`` (default) stops at the first problem with a message naming the file;
``on_error="skip"`` drops the bad rows/files, warns with their count, and keeps them in
``dataset.skipped`` (``image_id, path, problem``). Missing files are checked when the dataset is
built (``verify="exists"``: present and not empty); ``verify="decode"`` decodes every image up front (slow on a full
dataset; what ``cxr data verify`` does); a file that fails later, in ``__getitem__``, always raises.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

OnError = Literal["raise", "skip"]


Verify = Literal["none", "exists", "decode"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


MAX_PIXELS = 8192 * 8192  # larger than any radiograph detector; above this a file is refused unread


MIN_SIDE = 16  # smaller is not a radiograph (MedMNIST's 28 px is the smallest we know of)


class DataError(ValueError):
    """A dataset folder, metadata file or image is not what a loader expects."""


class ImageReadError(DataError):
    """An image file that cannot be used; ``path`` and ``problem`` say which and why."""

    def __init__(self, path, problem: str):
        self.path = path
        self.problem = problem
        super().__init__(f"{show_path(path)}: {problem}")


def show_path(path) -> str:
    """A path as printable text: bytes that are not UTF-8 (surrogate-escaped by ``os``) as ``\\xNN``."""
    return os.fsencode(os.fspath(path)).decode("utf-8", "backslashreplace")


# --- images --------------------------------------------------------------------------------------
# --- images --------------------------------------------------------------------------------------
def _open(path, max_pixels: int, min_side: int) -> Image.Image:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except OSError as e:
        raise ImageReadError(path, f"cannot access: {e.strerror}") from None
    if not os.path.isfile(path):
        raise ImageReadError(path, "not a regular file")
    if st.st_size == 0:
        raise ImageReadError(path, "empty file (0 bytes); expected a PNG or JPEG image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies below
            img = Image.open(path)
    except UnidentifiedImageError:
        raise ImageReadError(path, f"not an image: PIL cannot identify the format ({st.st_size} bytes); expected a PNG or JPEG") from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(path, f"refused as a decompression bomb: {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageReadError(path, f"corrupt or truncated image (header unreadable): {e}") from None
    w, h = img.size
    if w * h > max_pixels:
        img.close()
        raise ImageReadError(path, f"{w}x{h} pixels exceeds the limit of {max_pixels} (decompression-bomb guard; raise max_pixels if this is a real radiograph)")
    if min(w, h) < min_side:
        img.close()
        raise ImageReadError(path, f"image is only {w}x{h} pixels; expected at least {min_side} per side")
    return img


def _decode(img: Image.Image, path) -> tuple[Image.Image, float]:
    """Decode fully and convert to one channel: ``("L" image, 255)`` or ``("F" image, 65535)``."""
    try:
        img.load()
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # truncated JPEG/PNG, corrupt stream
        raise ImageReadError(path, f"corrupt or truncated image data ({img.format}): {e}") from None
    mode = img.mode
    if mode == "L":
        return img, 255.0
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float32)
        if mode == "I" and (arr.min() < 0 or arr.max() > 65535):
            raise ImageReadError(path, f"32-bit integer image with values {arr.min():.0f}..{arr.max():.0f}; expected 8- or 16-bit grayscale")
        return Image.fromarray(arr, mode="F"), 65535.0
    if mode in ("1", "RGB", "CMYK", "YCbCr"):
        return img.convert("L"), 255.0
    if mode in ("P", "PA", "LA", "RGBA", "La", "RGBa"):
        if mode in ("P", "PA"):
            has_alpha = mode == "PA" or "transparency" in img.info
            img = img.convert("RGBA" if has_alpha else "RGB")
            if not has_alpha:
                return img.convert("L"), 255.0
        rgba = img.convert("RGBA")
        luma = np.asarray(rgba.convert("L"), dtype=np.float32)
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0
        return Image.fromarray(np.round(luma * alpha).astype(np.uint8), mode="L"), 255.0
    raise ImageReadError(path, f"unsupported image mode {mode!r}; expected grayscale (8/16 bit), RGB(A) or palette")


def to_square(img: Image.Image, size: int) -> Image.Image:
    """Center-crop to a square on the shorter side, then antialiased bilinear resize to ``size``."""
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    if (w, h) != (s, s):
        img = img.crop((left, top, left + s, top + s))
    if s != size:
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return img


def read_image(path, size: int, *, max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE) -> np.ndarray:
    """Decode one image file to ``size`` x ``size``: uint8 (8-bit sources) or float32 in [0, 1] (16-bit).

    Raises :class:`ImageReadError` naming the file and the problem (see the module docstring)."""
    img = _open(path, max_pixels, min_side)
    with img:
        gray, scale = _decode(img, path)
        out = to_square(gray, size)
        if scale == 255.0:
            return np.asarray(out, dtype=np.uint8).copy()
        return np.clip(np.asarray(out, dtype=np.float32) / scale, 0.0, 1.0)


def check_image_file(path, *, decode: bool = True, max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE) -> None:
    """Raise :class:`ImageReadError` if ``path`` is missing, empty, not an image, too small/large,
    or (``decode=True``) does not decode."""
    img = _open(path, max_pixels, min_side)
    with img:
        if decode:
            _decode(img, path)


# --- what was left out, and why ------------------------------------------------------------------
def skips_table(image_id, path, problem) -> pd.DataFrame:
    return pd.DataFrame({"image_id": list(image_id), "path": list(path), "problem": list(problem)})


NO_SKIPS = skips_table([], [], [])


def check_on_error(on_error) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error={on_error!r}; expected 'raise' or 'skip'")


def root_dir(root, what: str) -> Path:
    if root is None:
        raise FileNotFoundError(f"{what}: root=None; pass the folder of the dataset (root=... / --root PATH)")
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{what} root {show_path(root)!r} does not exist")
    if not root.is_dir():
        raise DataError(f"{what} root {show_path(root)!r} is not a folder")
    return root
