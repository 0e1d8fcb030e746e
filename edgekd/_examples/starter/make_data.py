"""Write this project's data the way your own would look: small RGB PNG images in one folder
per class (data/train/<class>/*.png). The images are synthetic and made here, with the
standard library only: bars, checkerboards and squares in random colours, sizes and
places.

Run again with `python make_data.py` (it replaces data/); replace data/ with your own images
in the same layout, or point data.train in edgekd.toml at them."""

from __future__ import annotations

import random
import shutil
import struct
import zlib
from pathlib import Path

SIZE = 16  # pixels, height and width
PER_CLASS = 100
CLASSES = ("bars_horizontal", "bars_vertical", "checker", "square")

Pixel = tuple[int, int, int]


def png(pixels: list[list[Pixel]]) -> bytes:
    """An 8-bit RGB PNG of ``pixels`` (rows of (r, g, b)), without Pillow."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + bytes(v for p in row for v in p) for row in pixels)
    header = struct.pack(">IIBBBBB", len(pixels[0]), len(pixels), 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def colours(rng: random.Random) -> tuple[Pixel, Pixel]:
    """A background and a foreground colour that differ clearly in brightness."""
    while True:
        a = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        b = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        if abs(sum(a) - sum(b)) > 150:
            return a, b


def shape(kind: str, rng: random.Random) -> set[tuple[int, int]]:
    """The (row, column) pixels of one shape of ``kind``."""
    if kind.startswith("bars"):
        width, gap, phase = rng.randint(1, 2), rng.randint(2, 3), rng.randrange(4)
        lines = {i for i in range(SIZE) if (i + phase) % (width + gap) < width}
        horizontal = kind.endswith("horizontal")
        return {(r, c) for r in range(SIZE) for c in range(SIZE)
                if (r if horizontal else c) in lines}
    if kind == "checker":
        cell, dr, dc = rng.randint(2, 3), rng.randrange(3), rng.randrange(3)
        return {(r, c) for r in range(SIZE) for c in range(SIZE)
                if ((r + dr) // cell + (c + dc) // cell) % 2}
    size = rng.randint(5, 10)  # one square somewhere
    top, left = rng.randint(0, SIZE - size), rng.randint(0, SIZE - size)
    return {(r, c) for r in range(top, top + size) for c in range(left, left + size)}


def image(kind: str, rng: random.Random) -> bytes:
    back, fore = colours(rng)
    on = shape(kind, rng)
    rows = []
    for r in range(SIZE):
        row = []
        for c in range(SIZE):
            base = fore if (r, c) in on else back
            row.append(tuple(min(255, max(0, v + rng.randint(-20, 20))) for v in base))
        rows.append(row)
    return png(rows)  # type: ignore[arg-type]


def main() -> None:
    rng = random.Random(0)
    root = Path("data")
    shutil.rmtree(root, ignore_errors=True)
    for kind in CLASSES:
        folder = root / "train" / kind
        folder.mkdir(parents=True)
        for i in range(PER_CLASS):
            (folder / f"{i:03d}.png").write_bytes(image(kind, rng))
    print(f"{PER_CLASS * len(CLASSES)} images, {SIZE}x{SIZE} RGB, {len(CLASSES)} classes, "
          f"in {root / 'train'}")


if __name__ == "__main__":
    main()
