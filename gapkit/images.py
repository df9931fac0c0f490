"""Image lookup and size probing (header only, no full decode)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from gapkit.errors import FormatError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")


def find_image(stem: Path) -> Path | None:
    """The image beside an annotation: same stem, any common extension."""
    for ext in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS):
        p = stem.with_name(stem.name + ext)
        if p.is_file():
            return p
    return None


def image_size(path: str | Path, deep: bool = False) -> tuple[int, int]:
    """(width, height) from the header; ``deep`` also decodes every pixel to catch truncation."""
    p = Path(path)
    if not p.is_file():
        raise FormatError(p, "image file is missing")
    try:
        with Image.open(p) as im:
            size = im.size
            if deep:
                im.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise FormatError(p, f"not a readable image ({type(exc).__name__}: {exc})") from None
    return int(size[0]), int(size[1])
