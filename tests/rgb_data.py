"""A 3-channel 32x32 image classification data set made in the test: coloured shapes.

Six classes (bar, circle, cross, ring, square, triangle) drawn at a random position and
size, in a random bright colour on a random dark background, with pixel noise. The colours
say nothing about the class, so a model has to learn shapes: a real (small) vision task that
a small CNN learns and a linear model does not.

:func:`shapes` gives arrays (``uint8 [N, 3, H, W]`` raw pixels and ``int64`` labels);
:func:`write_folders` writes them as a class-folder tree of PNGs (``root/<class>/<i>.png``),
the layout ``data.train`` reads; :func:`write_npz` as an ``.npz`` (``x``, ``y``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = ("bar", "circle", "cross", "ring", "square", "triangle")  # sorted: folder order


def _mask(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r = rng.uniform(0.22, 0.36) * size
    cy, cx = rng.uniform(r + 1, size - r - 1, 2)
    dy, dx = yy - cy, xx - cx
    if kind == "circle":
        return dy**2 + dx**2 <= r**2
    if kind == "ring":
        d = np.sqrt(dy**2 + dx**2)
        return (d <= r) & (d >= 0.55 * r)
    if kind == "square":
        return (np.abs(dy) <= 0.85 * r) & (np.abs(dx) <= 0.85 * r)
    if kind == "triangle":  # apex up
        return (dy <= 0.8 * r) & (dy >= -r + 2 * np.abs(dx))
    if kind == "cross":
        w = 0.3 * r
        return ((np.abs(dy) <= w) & (np.abs(dx) <= r)) | ((np.abs(dx) <= w) & (np.abs(dy) <= r))
    if kind == "bar":  # horizontal or vertical
        long, thin = (dx, dy) if rng.random() < 0.5 else (dy, dx)
        return (np.abs(long) <= 1.1 * r) & (np.abs(thin) <= 0.3 * r)
    raise ValueError(kind)


def shapes(per_class: int, *, seed: int = 0, size: int = 32, noise: float = 8.0
           ) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` images of each class in :data:`CLASSES`, shuffled: ``(x, y)`` with
    ``x`` uint8 ``[N, 3, size, size]`` and ``y`` int64 labels (indices into CLASSES)."""
    rng = np.random.default_rng(seed)
    n = per_class * len(CLASSES)
    x = np.empty((n, 3, size, size), np.uint8)
    y = np.repeat(np.arange(len(CLASSES), dtype=np.int64), per_class)
    for i, label in enumerate(y):
        fg = rng.uniform(0, 255, 3)
        fg *= rng.uniform(170, 255) / fg.max()  # bright, any hue
        bg = rng.uniform(0, 90, 3)  # dark, any hue
        m = _mask(CLASSES[label], size, rng)
        img = np.where(m[None], fg[:, None, None], bg[:, None, None])
        img = img + rng.normal(0, noise, img.shape)
        x[i] = np.clip(img, 0, 255).astype(np.uint8)
    order = rng.permutation(n)
    return x[order], y[order]


def write_folders(root: Path, x: np.ndarray, y: np.ndarray) -> Path:
    """``x``/``y`` from :func:`shapes` as ``root/<class>/<i>.png`` (RGB PNGs); returns root."""
    from PIL import Image

    for name in CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
    for i, (img, label) in enumerate(zip(x, y, strict=True)):
        Image.fromarray(img.transpose(1, 2, 0), "RGB").save(root / CLASSES[label] / f"{i}.png")
    return root


def write_npz(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    """``x``/``y`` as an ``.npz`` (``x`` raw uint8 pixels, NCHW; ``y`` labels)."""
    np.savez(path, x=x, y=y)
    return path
