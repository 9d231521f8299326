"""The scan: every example of a run checked before its first step, for far less than decoding it.

A run of hours must not die at hour three on a bad file, so every file is
checked up front. Decoding every image to check it is what the training
then does anyway, so the scan reads less:

- an image's header (readable, a mode kerasseg reads, its size as a viewer
  shows it: EXIF orientation applied) and its end (a JPEG's end-of-image
  marker; a PNG's chunks up to IEND), which catches a file cut short by a
  copy or a download. Any other format, and a file whose end does not look
  whole, is decoded (`read_image`), so the verdict is always the decoder's;
- a mask decoded whole (as `read_mask` decodes it), its values counted as it
  decodes: they are what is checked (classes or the ignore label), and a mask
  is one channel of a few values, cheaper to decode than its photo.

What the scan cannot see (a JPEG damaged in its middle) stops the run when
it is met, naming the file, at the last complete epoch (kerasseg.train).

Results are kept per file, with its size and modification time: a run
records them (DIR/scan.json), so `--resume` and `evaluate` check only the
files that changed since.
"""

import json
import os
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from kerasseg.data.reading import (DatasetError, binary_mask_problems, mask_summary, mask_values, progress_bar,
                                   raise_problems, read_image, size_problems, value_problems)

FILE = "scan.json"  # in a run directory
VERSION = 2  # (2: each entry says which files TensorFlow's decoders read as the reader does: "codec")
# modes whose header says all that read_image would (any other is decoded: 32-bit pixels are refused by value)
_HEADER_MODES = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "I;16", "I;16B",
                 "I;16L"}
_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def _png_whole(f):
    """Whether the PNG in `f` holds its chunks up to IEND, with no metadata after its image data (which Pillow
    reads only when decoding: an EXIF orientation there)."""
    f.seek(8)
    data_seen = False
    while True:
        head = f.read(8)
        if len(head) < 8:
            return False
        length, kind = struct.unpack(">I4s", head)
        if kind == b"IEND":
            return True
        if kind == b"IDAT":
            data_seen = True
        elif data_seen:
            return False
        f.seek(length + 4, 1)  # the data and the CRC


def _jpeg_whole(f):
    f.seek(-2, os.SEEK_END)
    return f.read(2) == b"\xff\xd9"


def image_size(path):
    """(height, width) of the image at `path` as read_image gives it, from its header when its end shows it
    whole, else from decoding it (a DatasetError then names what is wrong)."""
    return image_header(path)[0]


# files TensorFlow's decoders give exactly the reader's pixels of: (format, mode) -> kerasseg.data.crops.CODECS
# index (JPEG with libjpeg's accurate DCT, as Pillow decodes; 8-bit PNG, gray expanded and alpha dropped as
# Pillow's convert("RGB") does); upright (no EXIF rotation), checked against the reader by the tests
_FAST = {("JPEG", "RGB"): 1, ("JPEG", "L"): 1, ("MPO", "RGB"): 1, ("PNG", "RGB"): 0, ("PNG", "RGBA"): 0,
         ("PNG", "L"): 0}


def _png_depth(f):
    """The bits per sample of the open PNG file `f` (its IHDR chunk)."""
    f.seek(24)
    return f.read(1)[0]


def image_header(path):
    """((height, width) of the image at `path` as read_image gives it, the kerasseg.data.crops codec that
    decodes it exactly as the reader does or None), from its header when its end shows it whole, else from
    decoding it (a DatasetError then names what is wrong)."""
    from PIL import Image

    try:
        with open(path, "rb") as f, Image.open(f) as image:
            whole = image.mode in _HEADER_MODES and (image.format in ("JPEG", "MPO") and _jpeg_whole(f) or
                                                     image.format == "PNG" and _png_whole(f))
            if whole:
                width, height = image.size
                # (the base class's getexif: a PNG's own loads the pixels to look for late metadata, and
                # _png_whole found none)
                orientation = Image.Image.getexif(image).get(0x0112, 1)
                codec = _FAST.get((image.format, image.mode)) if orientation in (1, None) else None
                if image.format == "PNG" and (image.info.get("transparency") is not None or _png_depth(f) != 8):
                    codec = None  # (a transparent colour, or 16 bits whose high byte the reader keeps: its own)
                return ((width, height) if orientation in _TRANSPOSED else (height, width)), codec
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        pass  # read_image says what is wrong, in the words every path uses
    return read_image(path).shape[:2], None


def mask_codec(path):
    """0 ("png") when the mask at `path` is an upright 8-bit grayscale PNG, which TensorFlow decodes as
    read_mask reads it; else None."""
    from PIL import Image

    try:
        with Image.open(path) as mask:
            upright = Image.Image.getexif(mask).get(0x0112, 1) in (1, None)
            return 0 if mask.format == "PNG" and mask.mode == "L" and upright else None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def _stat(path):
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


@dataclass
class Scan:
    """What the scan found: {image path: {"stat": the image's and mask's [size, mtime_ns], "size": [height,
    width], "values": the mask's distinct values}} for the examples on disk; sizes of the others."""

    entries: dict = field(default_factory=dict)
    seconds: float = 0.0
    checked: int = 0  # examples checked by this scan (the others were known from a record)

    def size(self, example):
        """(height, width) of `example`, or None when unknown (an array example: its own shape)."""
        if example.on_disk:
            return tuple(self.entries[example.image]["size"])
        if example.size is not None:
            return tuple(example.size)
        return tuple(getattr(example.image, "shape", (None, None))[:2])

    def codecs(self, example):
        """(image codec, mask codec) of an example on disk (kerasseg.data.crops.CODECS indices; None: the reader
        decodes it), (None, None) for others."""
        entry = self.entries.get(example.image) if example.on_disk else None
        return tuple(entry.get("codec") or (None, None)) if entry else (None, None)

    def decoded_bytes(self, examples):
        """The memory the examples take decoded: an RGB image and a mask, 4 bytes a pixel."""
        return sum(4 * h * w for h, w in (self.size(e) for e in examples) if h)

    def save(self, directory):
        from kerasseg import files

        files.write_text_atomic(os.path.join(directory, FILE),
                                json.dumps({"version": VERSION, "entries": self.entries}) + "\n")

    @classmethod
    def merged(cls, *scans):
        """One Scan of the entries of `scans` (None skipped; a later one's entry for a file wins)."""
        return cls({k: v for s in scans if s for k, v in s.entries.items()})

    @classmethod
    def load(cls, directory):
        """The scan recorded in `directory` (empty when there is none, or one of another version)."""
        try:
            with open(os.path.join(directory, FILE), encoding="utf-8", errors="surrogateescape") as f:
                saved = json.load(f)
        except (OSError, ValueError):
            return cls()
        return cls(saved.get("entries", {})) if saved.get("version") == VERSION else cls()


def _check_file(example):
    """(entry, problems) of one example on disk."""
    try:
        stat = _stat(example.image) + _stat(example.mask)
        size, codec = image_header(example.image)
        mask_size, values = mask_summary(example.mask, example.binary_mask)
    except DatasetError as error:
        return None, [str(error)]
    except OSError as error:  # (gone since it was listed)
        return None, [f"{example.name}: {error.strerror}"]
    entry = {"stat": stat, "mask": example.mask, "size": list(size), "values": values,
             "codec": [codec, mask_codec(example.mask)]}
    return entry, size_problems(example, size, mask_size)


def scan(examples, num_classes=None, known=None, progress=True):
    """Checks every example (see the module docstring): a Scan, or one DatasetError listing every problem (a
    file unreadable or cut short, a mask of another size than its image, given `num_classes` mask values that
    are no class, masks that hold only 0 and 255). `known`: an earlier Scan, whose entries are taken for the
    files unchanged since (same size and modification time)."""
    started = time.time()
    known = known.entries if known else {}
    result, problems, todo = Scan(), [], []
    for example in examples:
        if not example.on_disk:
            continue
        entry = known.get(example.image)
        try:
            fresh = entry is not None and entry.get("mask") == example.mask and \
                entry["stat"] == _stat(example.image) + _stat(example.mask)
        except OSError:
            fresh = False
        if fresh:
            result.entries[example.image] = entry
        else:
            todo.append(example)
    bar = progress_bar(len(todo), f"scanning {len(todo)} examples (each image's header and end, each mask's "
                                  "values)") if progress and len(todo) > 200 else None
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for i, (example, (entry, issues)) in enumerate(zip(todo, pool.map(_check_file, todo)), start=1):
            problems += issues
            if entry is not None:
                result.entries[example.image] = entry
            if bar and (i % 100 == 0 or i == len(todo)):
                bar.update(i)
    values = []
    for example in examples:
        if example.on_disk:
            entry = result.entries.get(example.image)
            values.append(entry["values"] if entry else [])
        elif example.generate is None:  # an array in memory
            values.append(mask_values(example.mask))
            problems += size_problems(example, example.image.shape[:2], example.mask.shape[:2])
        if num_classes is not None and values and (example.on_disk or example.generate is None):
            problems += value_problems(example.mask_name, values[-1], num_classes)
    problems += binary_mask_problems([e for e in examples if e.generate is None], values)
    raise_problems(problems)
    result.seconds, result.checked = time.time() - started, len(todo)
    if bar:
        print(f"scanned {len(todo)} examples in {result.seconds:.1f} s ({len(todo) / result.seconds:.0f} "
              f"examples/s, {2 * len(todo) / result.seconds:.0f} files/s)")
    return result
