"""A generator of `folder:` datasets as real folders hold them: valid, but awkward.

What a user's own folder brings and a tidy fixture does not: phone JPEGs stored
sideways with an EXIF orientation, 16-bit PNGs (colour, and 12-bit data in a
16-bit grayscale file), palette, CMYK, grayscale+alpha and RGBA images, TIFF
and BMP, upper-case extensions, file names with spaces, dots, '#', brackets and
non-ASCII letters, a labels.txt written on Windows (byte-order mark, CRLF), and
pixels that span only part of [0, 255] (a dim camera). Every example's image, as
a viewer shows it, matches its mask: blobs whose class follows their hue.
"""

import struct
import zlib

import numpy as np
from PIL import Image

CLASSES = ("soil", "leaf", "stone")
COLOURS = np.array([[150, 110, 70], [70, 170, 80], [140, 140, 150]], np.float64)  # soil, leaf, stone
# (file name pattern, how the image is stored); {i} is the example's index
KINDS = (
    ("field plot {i:02d}.png", "png"),
    ("IMG_{i:04d}.JPG", "exif6"),  # a portrait photo stored sideways, Orientation 6
    ("plot.v2.{i:02d}.png", "rgb16"),
    ("parcelle été {i:02d}.jpg", "exif3"),  # upside down, Orientation 3
    ("田んぼ {i:02d}.png", "palette"),
    ("plot #{i} (copy).tif", "tiff"),
    ("scan_{i:02d}.jpeg", "cmyk"),
    ("plot_{i:02d}.Png", "rgba"),
    ("plot {i:02d} .bmp", "bmp"),  # a blank before the extension
    ("IMG_{i:04d}_rot.jpg", "exif8"),  # Orientation 8
    ("gray plot {i:02d}.png", "la"),
    ("thermal scan {i:02d}.png", "gray16"),  # 16-bit grayscale, the full range used
)


def png16(path, pixels):
    """Writes (H, W, 3) or (H, W) uint16 `pixels` as a 16-bit PNG (Pillow writes 16-bit grayscale only)."""
    pixels = np.asarray(pixels, np.uint16)
    colour = pixels.ndim == 3
    height, width = pixels.shape[:2]
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, 2 if colour else 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                + chunk(b"IEND", b""))


def _exif(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def _stored_sideways(upright, orientation):
    """The pixels a camera stores for an `upright` picture tagged with `orientation` (what a viewer undoes)."""
    return {3: np.rot90(upright, 2), 6: np.rot90(upright, 1), 8: np.rot90(upright, -1)}[orientation]


def save_as(path, upright, kind):
    """Saves the (H, W, 3) uint8 `upright` picture at `path` stored as `kind` (see KINDS)."""
    if kind.startswith("exif"):
        orientation = int(kind[4:])
        Image.fromarray(np.ascontiguousarray(_stored_sideways(upright, orientation))).save(
            path, quality=95, exif=_exif(orientation))
    elif kind == "rgb16":
        png16(path, upright.astype(np.uint16) * 257 + 37)  # the high byte is the picture; the low one noise
    elif kind == "palette":
        Image.fromarray(upright).quantize(64, dither=Image.Dither.NONE).save(path)
    elif kind == "cmyk":
        Image.fromarray(upright).convert("CMYK").save(path, quality=95)
    elif kind == "rgba":
        alpha = np.full(upright.shape[:2], 200, np.uint8)
        Image.fromarray(np.dstack([upright, alpha])).save(path)
    elif kind == "la":
        gray = np.asarray(Image.fromarray(upright).convert("L"))
        Image.fromarray(np.dstack([gray, np.full_like(gray, 255)]), mode="LA").save(path)
    elif kind == "gray16":
        gray = np.asarray(Image.fromarray(upright).convert("L")).astype(np.uint16)
        png16(path, gray * 257)
    else:
        Image.fromarray(upright).save(path, **({"quality": 95} if kind == "jpg" else {}))


def write_awkward_folder(root, count=36, seed=7, sizes=((40, 56), (48, 48), (36, 60), (52, 44)),
                         value_range=(40, 200)):
    """A `folder:` dataset at `root` of `count` examples, each stored as the next of KINDS; returns {stem:
    (image file name, the upright uint8 RGB picture before it was stored)}."""
    root.mkdir(parents=True)
    (root / "images").mkdir()
    (root / "masks").mkdir()
    rng = np.random.default_rng(seed)
    low, high = value_range
    written = {}
    for i in range(count):
        pattern, kind = KINDS[i % len(KINDS)]
        name = pattern.format(i=i)
        stem = name.rsplit(".", 1)[0]
        h, w = sizes[(i + i // len(KINDS)) % len(sizes)]  # each kind at several sizes, square or not
        yy, xx = np.mgrid[:h, :w]
        mask = np.zeros((h, w), np.uint8)
        for _ in range(rng.integers(1, 4)):
            cy, cx, ry, rx = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(5, h / 2), rng.uniform(5, w / 2)
            mask[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = rng.integers(1, 3)
        picture = np.clip(COLOURS[mask] + rng.normal(0, 12, (h, w, 3)), low, high).astype(np.uint8)
        picture[0, 0], picture[-1, -1] = low, high  # the range is spanned exactly
        save_as(root / "images" / name, picture, kind)
        mask_image = Image.fromarray(mask, mode="L")
        if i % 2:  # palette masks too, with colours unrelated to the indices
            mask_image = mask_image.convert("P")
            mask_image.putpalette([200, 10, 10, 10, 200, 10, 10, 10, 200] + [0] * 759)
        mask_image.save(root / "masks" / f"{stem}.png")
        written[stem] = (name, picture)
    # written on Windows: a byte-order mark and CRLF line ends
    (root / "labels.txt").write_bytes("\ufeff".encode() + "\r\n".join(CLASSES).encode() + b"\r\n")
    return written


def spellings(folder, cwd):
    """Other names of `folder` a user may type: a trailing slash, a detour through `..`, a symlink (made
    beside it) and a path relative to `cwd`."""
    import os

    link = folder.parent / f"{folder.name} link"
    try:
        link.symlink_to(folder, target_is_directory=True)
    except FileExistsError:  # (made by an earlier call, maybe in another test process)
        pass
    return [f"{folder}/", f"{folder}/../{folder.name}", str(link), os.path.relpath(folder, cwd)]


ASPECT_CLASSES = ("ground", "disc", "tall")
# mostly 2:1 landscape pictures, and a portrait, odd sizes and one smaller than a 32-pixel crop
ASPECT_SIZES = ((48, 96),) * 6 + ((96, 48), (47, 93), (40, 80), (24, 44))


def write_aspect_folder(root, count=120, seed=5, sizes=ASPECT_SIZES):
    """A `folder:` dataset whose classes only geometry tells apart: discs and ellipses twice as tall as wide,
    of one colour. Squashing a 2:1 picture into a square turns its discs into tall ellipses: a model trained
    on the pictures' own aspect reads them wrong squashed."""
    rng = np.random.default_rng(seed)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(count):
        h, w = sizes[i % len(sizes)]
        yy, xx = np.mgrid[:h, :w] + 0.5
        mask = np.zeros((h, w), np.uint8)
        side = min(h, w)
        for _ in range(rng.integers(2, 5)):
            kind = int(rng.integers(1, 3))
            radius = rng.uniform(0.1, 0.18) * side
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            mask[((yy - cy) / (radius * kind)) ** 2 + ((xx - cx) / radius) ** 2 <= 1] = kind
        picture = np.where(mask[..., None] > 0, [60, 170, 80], [150, 120, 90]) + rng.normal(0, 15, (h, w, 3))
        Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8)).save(root / "images" / f"street {i:03d}.png")
        Image.fromarray(mask).save(root / "masks" / f"street {i:03d}.png")
    (root / "labels.txt").write_text("\n".join(ASPECT_CLASSES) + "\n")
    return root
