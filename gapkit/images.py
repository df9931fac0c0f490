"""Image lookup and checks, in two depths.

``image_size`` reads the header and, for PNG and JPEG, checks that the file ends the way a
whole file ends (PNG's IEND chunk, JPEG's end-of-image marker), which catches a truncated
download or copy at the cost of one short read; readers call it for every record.
``decode=True`` also decodes every pixel (``gapkit validate`` does), which catches damage
inside a file that still ends well.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from gapkit.errors import FormatError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")
_PNG_END = b"IEND\xaeB`\x82"
_JPEG_END = b"\xff\xd9"
_TAIL = 4096  # JPEGs may carry some trailing bytes after the end marker


def find_image(stem: Path) -> Path | None:
    """The image beside an annotation: same stem, any common extension."""
    for ext in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS):
        p = stem.with_name(stem.name + ext)
        if p.is_file():
            return p
    return None


def _truncated(p: Path, fmt: str | None) -> bool:
    if fmt not in ("PNG", "JPEG"):
        return False
    size = os.path.getsize(p)
    with open(p, "rb") as f:
        f.seek(max(0, size - _TAIL))
        tail = f.read()
    return (_PNG_END not in tail[-64:]) if fmt == "PNG" else (_JPEG_END not in tail)


def image_size(path: str | Path, decode: bool = False) -> tuple[int, int]:
    """(width, height) of a whole image file, or a FormatError that names the file and why."""
    p = Path(path)
    try:
        present = p.is_file()
    except OSError as exc:  # a name too long, a loop of links
        raise FormatError(p, f"cannot open image ({exc.strerror})") from None
    if not present:
        raise FormatError(p, "image file is missing")
    try:
        if p.stat().st_size == 0:
            raise FormatError(p, "image file is empty (0 bytes)")
        with Image.open(p) as im:
            size, fmt = im.size, im.format
            if _truncated(p, fmt):
                raise FormatError(p, f"image file is truncated (no {fmt} end marker)")
            if decode:
                im.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise FormatError(p, f"not a readable image ({type(exc).__name__}: {exc})") from None
    return int(size[0]), int(size[1])
