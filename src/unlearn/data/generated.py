"""Procedural "shapes": ten classes of coloured shapes and textures, made hard by nuisance on purpose.

Every image is drawn from signed distance fields on a pixel grid, all images of a class at once.
Pairs of classes look alike (circle/ring, square/diamond, cross/star, horizontal/vertical stripes),
and low contrast, heavy noise, occluders and distractor blobs keep a small CNN well short of 100%,
so class prototypes share features the way they do on natural images.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from unlearn.data.base import ClassificationData, LabeledTensors
from unlearn.errors import UnlearnError

CLASS_NAMES = [
    "circle",
    "ring",
    "square",
    "diamond",
    "triangle",
    "cross",
    "star",
    "horizontal_stripes",
    "vertical_stripes",
    "checkerboard",
]
TEXTURES = {"horizontal_stripes", "vertical_stripes", "checkerboard"}
# Rotation of each class as (centre, half-range) in degrees; None = any angle.
ROTATION: dict[str, tuple[float, float] | None] = {
    "circle": None,
    "ring": None,
    "square": (0.0, 15.0),
    "diamond": (0.0, 15.0),
    "triangle": None,
    "cross": None,
    "star": None,
    "horizontal_stripes": (0.0, 15.0),
    "vertical_stripes": (90.0, 15.0),
    "checkerboard": None,
}
# How often each nuisance hits an image; with the shape sizes below they set how hard the task is
# (AllCNN(width=1/3), 15 epochs of SGD at lr 0.05: 85-91% test accuracy, depending on the init seed).
P_BLOB, P_LOW_CONTRAST, P_SCRATCH, P_OCCLUDER, P_HEAVY_NOISE = 0.25, 0.08, 0.1, 0.1, 0.08
Field = np.ndarray  # (n, H, W) float32
Shape = Callable[[Field, Field, np.random.Generator], Field]  # (u, v, rng) -> signed distance, radius units


def _circle(u: Field, v: Field, rng: np.random.Generator) -> Field:
    return np.hypot(u, v) - 0.9


def _ring(u: Field, v: Field, rng: np.random.Generator) -> Field:
    half_width = _uniform(rng, 0.15, 0.3, len(u))
    return np.abs(np.hypot(u, v) - 0.75) - half_width


def _square(u: Field, v: Field, rng: np.random.Generator) -> Field:
    return np.maximum(np.abs(u), np.abs(v)) - 0.8


def _diamond(u: Field, v: Field, rng: np.random.Generator) -> Field:
    """A rhombus taller than wide, so a tilted square is the nearest look-alike."""
    a, b = 0.75, 1.0
    return (np.abs(u) / a + np.abs(v) / b - 1.0) / np.hypot(1 / a, 1 / b)


def _triangle(u: Field, v: Field, rng: np.random.Generator) -> Field:
    """Equilateral, circumradius 1.3: the largest distance past its three edges."""
    angles = np.deg2rad([90.0, 210.0, 330.0])  # outward normals of the edges
    return np.max([np.cos(a) * u + np.sin(a) * v - 0.65 for a in angles], axis=0)


def _cross(u: Field, v: Field, rng: np.random.Generator) -> Field:
    arm = 0.25
    return np.minimum(np.maximum(np.abs(u) - 1.0, np.abs(v) - arm), np.maximum(np.abs(u) - arm, np.abs(v) - 1.0))


def _star(u: Field, v: Field, rng: np.random.Generator) -> Field:
    """Five points: the radius swings between 0.4 and 1 with the polar angle."""
    theta = np.arctan2(v, u)
    radius = 0.4 + 0.6 * ((1 + np.cos(5 * theta)) / 2) ** 3
    return np.hypot(u, v) - radius


SHAPES: dict[str, Shape] = {
    "circle": _circle,
    "ring": _ring,
    "square": _square,
    "diamond": _diamond,
    "triangle": _triangle,
    "cross": _cross,
    "star": _star,
}


def _soft(distance: Field, edge: np.ndarray) -> Field:
    """Coverage in [0, 1] of a signed pixel distance, blurred over `edge` pixels."""
    return np.clip(0.5 - distance / edge, 0.0, 1.0)


def _texture(name: str, along: Field, across: Field, rng: np.random.Generator) -> Field:
    """Stripes along the rotated axis, or a checkerboard, as coverage in [0, 1]."""
    n = len(along)
    period = _uniform(rng, 3.0, 6.0, n)
    phase = _uniform(rng, 0, 2 * np.pi, n)
    wave = np.sin(2 * np.pi * across / period + phase)
    if name == "checkerboard":
        wave = wave * np.sin(2 * np.pi * along / period + phase)
    return np.clip(0.5 + 1.5 * wave, 0.0, 1.0)


def _uniform(rng: np.random.Generator, low: float, high: float, n: int) -> np.ndarray:
    """One float32 draw per image, shaped (n, 1, 1) to broadcast over the pixel grid."""
    return rng.uniform(low, high, (n, 1, 1)).astype(np.float32)


def _paint(image: Field, alpha: Field, colour: np.ndarray) -> Field:
    """Alpha-blend `colour` (n, 3) over `image` (n, 3, H, W) where `alpha` (n, H, W) covers it."""
    return image * (1 - alpha[:, None]) + colour[:, :, None, None] * alpha[:, None]


def _contrasting(rng: np.random.Generator, base: np.ndarray, contrast: np.ndarray) -> np.ndarray:
    """A colour `contrast` away from `base` (n, 3) in a random direction that stays inside [0, 1]."""
    direction = rng.normal(size=base.shape).astype(np.float32)
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    inward = -np.sign(np.sum(direction * (base - 0.5), axis=1, keepdims=True) + 1e-6)
    return np.clip(base + inward * direction * contrast[:, None], 0.0, 1.0)


def _draw_class(
    name: str, n: int, ys: Field, xs: Field, size: int, rng: np.random.Generator
) -> tuple[Field, np.ndarray]:
    """Coverage (n, H, W) of `n` images of one class at random place, scale, rotation and aspect.

    Also returns each object's (centre_y, centre_x, radius), so occluders can be put over it.
    """
    scale = size / 32
    radius = _uniform(rng, 8.0, 14.0, n) * scale
    centre_y = _uniform(rng, 0, 1, n) * (size - 1.2 * radius) + 0.6 * radius  # may poke out of frame
    centre_x = _uniform(rng, 0, 1, n) * (size - 1.2 * radius) + 0.6 * radius
    spec = ROTATION[name]
    degrees = rng.uniform(0, 360, n) if spec is None else spec[0] + rng.uniform(-spec[1], spec[1], n)
    angle = np.deg2rad(degrees).astype(np.float32)[:, None, None]
    dy, dx = ys - centre_y, xs - centre_x
    along = np.cos(angle) * dx + np.sin(angle) * dy  # pixels, in the shape's own frame
    across = -np.sin(angle) * dx + np.cos(angle) * dy
    stretch = _uniform(rng, 0.9, 1.1, n)
    u, v = along / (radius * stretch), across * stretch / radius
    edge = _uniform(rng, 0.5, 1.2, n) * scale
    if name in TEXTURES:
        region = _soft((np.maximum(np.abs(u), np.abs(v)) - 0.9) * radius, edge)
        alpha = region * _texture(name, along, across, rng)
    else:
        alpha = _soft(SHAPES[name](u, v, rng) * radius, edge)
    return alpha, np.concatenate([centre_y, centre_x, radius], axis=2)[:, 0]


def render_shapes(labels: np.ndarray, rng: np.random.Generator, image_size: int = 32) -> np.ndarray:
    """Images (n, 3, H, W) in [0, 1] of the given class ids, every nuisance drawn from `rng`."""
    n, size, scale = len(labels), image_size, image_size / 32
    ys, xs = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32), indexing="ij")
    ys, xs = ys[None], xs[None]

    # Background: a random colour with a linear gradient in a random direction.
    base = rng.uniform(0, 1, (n, 3)).astype(np.float32)
    tilt = _uniform(rng, 0, 2 * np.pi, n)
    ramp = (np.cos(tilt) * (xs - size / 2) + np.sin(tilt) * (ys - size / 2)) / size
    gradient = rng.uniform(-0.5, 0.5, (n, 3)).astype(np.float32)
    image = np.clip(base[:, :, None, None] + gradient[:, :, None, None] * ramp[:, None], 0, 1)

    # A distractor blob behind the object.
    blob = _soft(
        np.hypot(ys - _uniform(rng, 0, size, n), xs - _uniform(rng, 0, size, n)) - _uniform(rng, 2, 4, n) * scale,
        np.float32(1.0),
    )
    blob *= (rng.uniform(size=n) < P_BLOB)[:, None, None]
    image = _paint(image, blob, rng.uniform(0, 1, (n, 3)).astype(np.float32))

    # The object, in a colour a random distance from the background's (sometimes barely visible).
    low = rng.uniform(size=n) < P_LOW_CONTRAST
    contrast = np.where(low, rng.uniform(0.15, 0.3, n), rng.uniform(0.4, 0.9, n)).astype(np.float32)
    alpha = np.zeros((n, size, size), dtype=np.float32)
    geometry = np.zeros((n, 3), dtype=np.float32)
    for class_id, name in enumerate(CLASS_NAMES):
        members = np.flatnonzero(labels == class_id)
        if len(members):
            alpha[members], geometry[members] = _draw_class(name, len(members), ys, xs, size, rng)
    image = _paint(image, alpha, _contrasting(rng, base, contrast))

    # A scratch across the image, and a square occluder over part of the object.
    normal = _uniform(rng, 0, np.pi, n)
    offset = np.cos(normal) * (xs - _uniform(rng, 0, size, n)) + np.sin(normal) * (ys - _uniform(rng, 0, size, n))
    scratch = _soft(np.abs(offset) - _uniform(rng, 0.5, 1.5, n) * scale, np.float32(1.0))
    scratch *= (rng.uniform(size=n) < P_SCRATCH)[:, None, None]
    image = _paint(image, scratch, rng.uniform(0, 1, (n, 3)).astype(np.float32))
    centre_y, centre_x, radius = (geometry[:, i, None, None] for i in range(3))
    heading = _uniform(rng, 0, 2 * np.pi, n)
    box_y, box_x = centre_y + np.sin(heading) * radius, centre_x + np.cos(heading) * radius
    half = radius * _uniform(rng, 0.25, 0.5, n)
    box = _soft(np.maximum(np.abs(ys - box_y), np.abs(xs - box_x)) - half, np.float32(1.0))
    box *= (rng.uniform(size=n) < P_OCCLUDER)[:, None, None]
    image = _paint(image, box, rng.uniform(0, 1, (n, 3)).astype(np.float32))

    # Pixel noise: mild for most images, heavy for a few.
    heavy = rng.uniform(size=n) < P_HEAVY_NOISE
    sigma = np.where(heavy, rng.uniform(0.12, 0.25, n), rng.uniform(0.02, 0.08, n)).astype(np.float32)
    image += rng.normal(size=image.shape).astype(np.float32) * sigma[:, None, None, None]
    return np.clip(image, 0, 1)


def _balanced_labels(count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` class ids, as equal per class as `count` allows, in random order."""
    return rng.permutation(np.arange(count) % len(CLASS_NAMES))


def load_shapes(num_train: int = 5000, num_test: int = 1000, seed: int = 0, image_size: int = 32) -> ClassificationData:
    """Balanced train/test sets of (3, image_size, image_size) shapes, deterministic for a `seed`.

    Train and test are drawn from two independent streams spawned from `seed`. Inputs are
    standardised per channel with the training set's mean and std (roughly zero mean, unit variance).
    """
    if num_train < len(CLASS_NAMES) or num_test < len(CLASS_NAMES):
        raise UnlearnError(
            f"num_train={num_train} and num_test={num_test} must each be at least {len(CLASS_NAMES)} "
            "so every class appears in both sets."
        )
    if image_size < 16:
        raise UnlearnError(f"image_size={image_size} is too small to draw the shapes; use 16 or more.")
    train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    train_y, test_y = _balanced_labels(num_train, train_rng), _balanced_labels(num_test, test_rng)
    train_x = torch.from_numpy(render_shapes(train_y, train_rng, image_size))
    test_x = torch.from_numpy(render_shapes(test_y, test_rng, image_size))
    mean = train_x.mean(dim=(0, 2, 3), keepdim=True)
    std = train_x.std(dim=(0, 2, 3), keepdim=True)
    return ClassificationData(
        name="shapes",
        train=LabeledTensors((train_x - mean) / std, torch.from_numpy(train_y)),
        test=LabeledTensors((test_x - mean) / std, torch.from_numpy(test_y)),
        num_classes=len(CLASS_NAMES),
        input_shape=(3, image_size, image_size),
        class_names=list(CLASS_NAMES),
    )
