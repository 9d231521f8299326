"""`shapes`: the built-in segmentation dataset, generated, nothing to download.

Every image holds a few overlapping filled shapes on a textured background.
The class of a pixel is the geometry of the shape on top there: a disc, a
square or a triangle. Colour carries no information: every shape's colour is
drawn from the same distribution whatever its class, and backgrounds are
smooth colour fields with noise, so no colour threshold can solve the task;
the network has to see the outline, which needs a receptive field as large as
the shape (exactly what the contracting path of a U-Net provides).

`shapes:hard` (`hard_sample`) is the variant on which models do not
saturate, for comparing architectures and measuring what quantization costs:
nine classes (adding ring, cross, thin bar, ellipse and diamond, so aspect
and topology matter, not only corners), four to eight objects per image that
occlude each other heavily, small objects and bars one to two pixels thick,
and striped backgrounds whose colours are drawn from the same distribution
as the objects' (no colour contrast is guaranteed).

Samples are a pure function of (seed, split, index, size): the same call
always gives the same pixels, the three splits never share an image, and any
height and width can be asked for.
"""

import numpy as np

CLASS_NAMES = ("background", "disc", "square", "triangle")
HARD_CLASS_NAMES = CLASS_NAMES + ("ring", "cross", "bar", "ellipse", "diamond")
SPLITS = {"train": 0, "val": 1, "test": 2}
DEFAULT_SIZES = {"train": 2000, "val": 200, "test": 200}


def _smooth_field(rng, height, width, cells=4):
    """A random smooth RGB field: a coarse random grid, bilinearly enlarged."""
    grid = rng.uniform(0, 255, size=(cells + 1, cells + 1, 3))
    ys = np.linspace(0, cells, height)
    xs = np.linspace(0, cells, width)
    y0 = np.minimum(ys.astype(int), cells - 1)
    x0 = np.minimum(xs.astype(int), cells - 1)
    fy = (ys - y0)[:, None, None]
    fx = (xs - x0)[None, :, None]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _shape_mask(kind, yy, xx, cy, cx, radius, angle):
    """Boolean mask of one filled shape; `radius` is its circumradius."""
    dy, dx = yy - cy, xx - cx
    if kind == 1:  # disc
        return dy**2 + dx**2 <= (0.85 * radius) ** 2
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    if kind == 2:  # square
        half = radius / np.sqrt(2.0)
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    # equilateral triangle: inside the three edges whose inner normals are 120 degrees apart
    inside = np.ones_like(u, dtype=bool)
    for k in range(3):
        theta = angle + np.pi / 2 + k * 2 * np.pi / 3
        inside &= dx * np.cos(theta) + dy * np.sin(theta) <= radius / 2
    return inside


def _contrasting_colour(rng, under):
    """A random colour that stands out from `under` (the mean background below the shape), 20 draws at most."""
    colour = rng.uniform(0, 255, 3)
    for _ in range(20):
        if np.abs(colour - under).sum() >= 150:
            break
        colour = rng.uniform(0, 255, 3)
    return colour


def sample(seed, split, index, height, width):
    """One (image uint8 HxWx3, mask uint8 HxW) pair."""
    rng = np.random.default_rng([seed, SPLITS[split], index])
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    image = _smooth_field(rng, height, width)
    mask = np.zeros((height, width), np.uint8)
    side = min(height, width)
    for _ in range(rng.integers(2, 5)):
        kind = int(rng.integers(1, len(CLASS_NAMES)))
        radius = rng.uniform(0.12, 0.26) * side
        cy, cx = rng.uniform(0.1, 0.9) * height, rng.uniform(0.1, 0.9) * width
        shape = _shape_mask(kind, yy, xx, cy, cx, radius, rng.uniform(0, 2 * np.pi))
        colour = _contrasting_colour(rng, image[shape].mean(axis=0) if shape.any() else image.mean(axis=(0, 1)))
        shading = _smooth_field(rng, height, width, cells=2) - 127.5
        image[shape] = np.clip(colour + 0.25 * shading[shape], 0, 255)
        mask[shape] = kind
    image += rng.normal(0, 8, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def _hard_mask(kind, yy, xx, cy, cx, radius, angle, rng):
    """Boolean mask of one shape of shapes:hard (kinds 1..3 as `shapes`)."""
    if kind <= 3:
        return _shape_mask(kind, yy, xx, cy, cx, radius, angle)
    dy, dx = yy - cy, xx - cx
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = np.abs(cos * dx + sin * dy), np.abs(-sin * dx + cos * dy)
    if kind == 4:  # ring: a disc with a hole of 45-70% of its radius
        r2 = dy**2 + dx**2
        return (r2 <= (0.85 * radius) ** 2) & (r2 >= (rng.uniform(0.45, 0.7) * 0.85 * radius) ** 2)
    if kind == 5:  # cross: two perpendicular arms
        arm = max(0.6, 0.22 * radius)
        return ((u <= radius) & (v <= arm)) | ((v <= radius) & (u <= arm))
    if kind == 6:  # bar: a long stroke one to two pixels thick
        return (u <= 1.3 * radius) & (v <= rng.uniform(0.5, 1.0))
    if kind == 7:  # ellipse: half as wide as long
        return (u / (0.9 * radius)) ** 2 + (v / (0.45 * radius)) ** 2 <= 1
    return u / (0.9 * radius) + v / (0.55 * radius) <= 1  # diamond: a rhombus, not a turned square


def _stripes(rng, height, width, yy, xx):
    """A smooth field crossed by stripes of a second random colour at a random angle and period."""
    field = _smooth_field(rng, height, width)
    theta, period = rng.uniform(0, np.pi), rng.uniform(3, 12)
    weight = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period)
    return field * (1 - 0.6 * weight[..., None]) + 0.6 * weight[..., None] * rng.uniform(0, 255, 3)


def hard_sample(seed, split, index, height, width):
    """One (image uint8 HxWx3, mask uint8 HxW) pair of shapes:hard (HARD_CLASS_NAMES)."""
    rng = np.random.default_rng([seed, SPLITS[split], index, 2])
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    image = _stripes(rng, height, width, yy, xx)
    mask = np.zeros((height, width), np.uint8)
    side = min(height, width)
    for _ in range(rng.integers(4, 9)):
        kind = int(rng.integers(1, len(HARD_CLASS_NAMES)))
        radius = max(2.0, rng.uniform(0.06, 0.24) * side)
        cy, cx = rng.uniform(0.05, 0.95) * height, rng.uniform(0.05, 0.95) * width
        shape = _hard_mask(kind, yy, xx, cy, cx, radius, rng.uniform(0, 2 * np.pi), rng)
        shading = _smooth_field(rng, height, width, cells=2) - 127.5
        image[shape] = np.clip(rng.uniform(0, 255, 3) + 0.3 * shading[shape], 0, 255)
        mask[shape] = kind
    image += rng.normal(0, 10, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask


VARIANTS = {"": (CLASS_NAMES, sample), "hard": (HARD_CLASS_NAMES, hard_sample)}


def _generate(split, count, make, height, width, target_shape):
    """`count` (default: the split's size) images and targets of `split`, the i-th from `make(i)`."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {tuple(SPLITS)}. Received: split={split!r}")
    count = DEFAULT_SIZES[split] if count is None else count
    images = np.empty((count, height, width, 3), np.uint8)
    targets = np.empty((count, *target_shape), np.uint8 if target_shape else np.int32)
    for i in range(count):
        images[i], targets[i] = make(i)
    return images, targets


def load(split, height, width, count=None, seed=0):
    """`count` samples of `split` (the split's default size when None) as arrays."""
    return _generate(split, count, lambda i: sample(seed, split, i, height, width), height, width, (height, width))


def classification_sample(seed, split, index, height, width):
    """One (image, label 0..2) pair: a single disc, square or triangle on the same backgrounds."""
    rng = np.random.default_rng([seed, SPLITS[split], index, 1])
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    image = _smooth_field(rng, height, width)
    kind = int(rng.integers(1, len(CLASS_NAMES)))
    side = min(height, width)
    radius = rng.uniform(0.2, 0.4) * side
    cy, cx = rng.uniform(0.35, 0.65) * height, rng.uniform(0.35, 0.65) * width
    shape = _shape_mask(kind, yy, xx, cy, cx, radius, rng.uniform(0, 2 * np.pi))
    image[shape] = _contrasting_colour(rng, image[shape].mean(axis=0))
    image += rng.normal(0, 8, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), kind - 1


def load_classification(split, height, width, count=None, seed=0):
    """Whole-image classification: one shape per image, label 0..2 (disc, square, triangle).

    The same generator and backgrounds as the segmentation data; used to
    train classifiers (the degradation benchmark) without any download.
    """
    return _generate(split, count, lambda i: classification_sample(seed, split, i, height, width), height, width,
                     ())
