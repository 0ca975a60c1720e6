"""Small previews of images for a person to see what was scored: a JPEG data URI per file."""
from __future__ import annotations

import base64
import io

THUMB_PX = 128


def thumbnail_uri(path, size: int = THUMB_PX) -> str | None:
    """A JPEG of the image at most ``size`` pixels a side, as a ``data:`` URI; None when the file
    is not a readable image (the caller shows its error instead)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.draft("RGB", (size, size))
            img = img.convert("RGB")
            img.thumbnail((size, size))
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=80)
    except Exception:  # noqa: BLE001 - any unreadable file simply gets no thumbnail
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
