"""The tf.data pipeline that feeds model.fit (on the TensorFlow and the JAX backend), streamed from the files.

Examples are read as they are needed: the pipeline runs over the list of
examples (shuffled whole, seeded, every epoch: a list of names, not a buffer
of decoded images), decodes each with the one reader of every path
(kerasseg.data.sources.read_example, in parallel calls), augments, batches
and prefetches. Memory grows with the batch size and the prefetch depth,
not with the number of images. A cache keeps decoded examples for the next
epochs: in memory (small sets, where holding them beats decoding again) or
in a directory (decoded once, for every later epoch and run).

Training batches: each (image, mask) pair at its own size is scaled so that
it covers the crop (times a random factor in `scale_range`), padded where it
falls short (image with 0, mask with the ignore label, so padding is never
learnt), randomly cropped to `image_size` and flipped left-right, image and
mask together; brightness, contrast, saturation and hue jitter touch the
image only (`augment="flip"`: the flip alone). Evaluation batches are the
pairs resized to `image_size`, the images rounded to whole pixel values (as
`kerasseg.data.resize_pair` gives them, and a camera frame of that size is).
"""

import contextlib
import functools
import hashlib
import os
import sys
import threading

import numpy as np
import tensorflow as tf

from kerasseg.data import crops
from kerasseg.data.reading import DatasetError, Example, read_example
from kerasseg.choices import CACHES, SCALE_RANGE
from kerasseg.errors import InputError
from kerasseg.labels import IGNORE_LABEL

AUTO_MEMORY_BYTES = 2**30  # cache="auto" holds a set in memory when it takes at most this decoded


class MemoryCache:
    """Decoded examples held in this process, by name."""

    def __init__(self):
        self.pairs = {}

    def get(self, example):
        return self.pairs.get(example.name)

    def put(self, example, pair):
        self.pairs[example.name] = pair


class DiskCache:
    """Decoded examples on disk, one .npy per example named by its files' paths, sizes and modification times
    (an edited file is decoded again), written whole or not at all: any number of epochs, runs and processes
    share it. Image and mask lie side by side ((H, W, 4) uint8, uncompressed) so that a training crop reads
    only its window of them, memory-mapped (`window`): no decoding and no whole-image copy in the epochs
    after the first. Examples not on disk are not kept. A write that fails (a full disk) stops the caching,
    once said, and the files are read from then on."""

    def __init__(self, directory):
        from kerasseg import files

        self.directory = os.path.abspath(os.path.expanduser(os.fspath(directory)))
        files.ensure_output_dir(os.path.join(self.directory, "x"))
        self.writable, self._lock = True, threading.Lock()

    def _path(self, example):
        import PIL

        identity = [PIL.__version__, 2]  # (a newer decoder may decode differently; 2: the .npy layout)
        for path in (example.image, example.mask):
            st = os.stat(path)
            identity += [os.path.realpath(path), st.st_size, st.st_mtime_ns]
        key = hashlib.sha1(repr(identity).encode("utf-8", "surrogateescape")).hexdigest()
        return os.path.join(self.directory, f"{key}.npy")

    def _load(self, example):
        if not example.on_disk:
            return None
        try:
            stored = np.load(self._path(example), mmap_mode="r")
        except (OSError, ValueError, EOFError):  # not cached yet (or a file damaged since)
            return None
        return stored if stored.ndim == 3 and stored.shape[-1] == 4 else None

    def get(self, example):
        stored = self._load(example)
        return None if stored is None else (np.array(stored[..., :3]), np.array(stored[..., 3]))

    def window(self, example, box):
        """The (rows y0:y1, columns x0:x1) of the cached image and mask as (h, w, 4) uint8, or None."""
        stored = self._load(example)
        return None if stored is None else np.array(stored[box[0]:box[2], box[1]:box[3]])

    def put(self, example, pair):
        from kerasseg import files

        if not example.on_disk or not self.writable:
            return
        both = np.concatenate([np.asarray(pair[0], np.uint8), np.asarray(pair[1], np.uint8)[..., None]], axis=-1)
        try:
            files.atomic_write(self._path(example), lambda tmp: np.save(tmp, both))
        except OSError as error:
            with self._lock:
                if self.writable:
                    self.writable = False
                    print(f"note: the cache stops: {error}; examples are decoded from their files from now on",
                          file=sys.stderr)


def open_cache(cache, examples, decoded_bytes):
    """(the cache for `cache` ("auto", "none", "memory" or a directory), a line saying which and why).
    `decoded_bytes`: what the examples take decoded (kerasseg.data.scan.Scan.decoded_bytes)."""
    size = f"{decoded_bytes / 2**30:.2f} GiB" if decoded_bytes >= 2**28 else f"{decoded_bytes / 2**20:.0f} MiB"
    if cache == "none":
        return None, f"cache none: every example is decoded from its file when it is needed ({size} decoded)"
    if cache == "memory":
        return MemoryCache(), f"cache memory: each example is decoded once and held ({size})"
    if cache == "auto":
        if not any(e.on_disk or e.generate for e in examples):
            return None, "cache none: the examples are in memory already"
        if decoded_bytes <= AUTO_MEMORY_BYTES:
            return MemoryCache(), (f"cache memory: the examples take {size} decoded, at most "
                                   f"{AUTO_MEMORY_BYTES / 2**30:g} GiB, so each is decoded once and held")
        return None, (f"cache none: the examples would take {size} decoded, more than "
                      f"{AUTO_MEMORY_BYTES / 2**30:g} GiB, so each is decoded from its file when it is needed "
                      "(a cache directory keeps decoded copies on disk instead)")
    disk = DiskCache(cache)
    return disk, f"cache {disk.directory}: each example is decoded once and kept there ({size})"


class ExampleReader:
    """Reads examples by their index for the pipeline: decoded (or made) by read_example, checked against
    `num_classes` when given, kept in `cache`. A file that cannot be read does not raise inside the pipeline
    (the engine would log the Python traceback it carries, and word the error its own way): it is kept in
    `failure` (the first), and in its place comes one black pixel ignored everywhere, which no loss or metric
    counts, until whoever consumes the pipeline stops (`failures` then raises it; kerasseg.train stops at the
    next step, without committing the epoch). `strict`: the error is raised there and then (a pipeline handed
    to a user, whose loop no `failures` block surrounds: kerasseg.data.dataset)."""

    def __init__(self, examples, num_classes=None, cache=None, strict=False):
        self.examples, self.num_classes, self.cache = _as_examples(examples), num_classes, cache
        self.failure, self.strict = None, strict

    def __len__(self):
        return len(self.examples)

    def __call__(self, index):
        example = self.examples[int(index)]
        try:
            pair = self.cache.get(example) if self.cache else None
            if pair is None:
                pair = read_example(example, self.num_classes)
                if self.cache:
                    self.cache.put(example, pair)
        except DatasetError as error:
            if self.strict:
                raise
            self.failure = self.failure or error
            return np.zeros((1, 1, 3), np.uint8), np.full((1, 1), IGNORE_LABEL, np.uint8)
        image, mask = pair
        return np.asarray(image, np.uint8), np.asarray(mask, np.uint8)

    def damaged(self):
        """The DatasetError of the first example whose file the reader cannot decode, or None: what a decode
        error in TensorFlow's ops (which cannot name the file) was about. Decodes every file on disk: only
        ever asked after such an error."""
        from concurrent.futures import ThreadPoolExecutor

        def check(example):
            try:
                read_example(example, self.num_classes)
            except DatasetError as error:
                return error
            return None

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            return next((e for e in pool.map(check, [e for e in self.examples if e.on_disk]) if e), None)

    def cached(self, index):
        """Whether the disk cache holds example `index` (its window can be read: `window`)."""
        return isinstance(self.cache, DiskCache) and self.cache._load(self.examples[int(index)]) is not None

    def window(self, index, box):
        """The rows y0:y1 and columns x0:x1 (`box`) of example `index`'s cached image and mask, (h, w, 4)."""
        found = self.cache.window(self.examples[int(index)], [int(v) for v in box])
        return found if found is not None else np.zeros((1, 1, 4), np.uint8)


def _as_examples(examples):
    """Examples from Examples, (image, mask) pairs in memory or a kerasseg.data.Split."""
    if hasattr(examples, "images"):
        examples = list(zip(examples.images, examples.masks))
    return [e if isinstance(e, Example) else Example(f"example {i}", e[0], e[1], key=str(i))
            for i, e in enumerate(examples)]


@contextlib.contextmanager
def failures(*readers):
    """Raises the DatasetError of a reader whose file failed (ExampleReader.failure) once the block is done,
    or in place of whatever error the engine (tf.data, Keras, JAX) raised meanwhile."""
    try:
        yield
    except Exception as error:
        failure = next((r.failure for r in readers if r.failure), None)
        if failure is None and any(sign in str(error) for sign in _DECODER_ERRORS):
            failure = next((found for r in readers for found in [r.damaged()] if found), None)
        if failure is None:
            raise
        raise failure from None
    failure = next((r.failure for r in readers if r.failure), None)
    if failure is not None:
        raise failure


# what TensorFlow's decoders say of a file they cannot decode (without its name: ExampleReader.damaged finds it)
_DECODER_ERRORS = ("Invalid PNG data", "Invalid JPEG data", "jpeg::Uncompress failed", "PNG", "JPEG")


def _blank_pair(image_size):
    return np.zeros((*image_size, 3), np.uint8), np.full(image_size, IGNORE_LABEL, np.uint8)


def blank_examples(count, image_size):
    """`count` black examples ignored everywhere: padding that no metric counts."""
    size = tuple(image_size)
    return [Example(f"padding #{i}", None, None, size=size, generate=functools.partial(_blank_pair, size))
            for i in range(count)]


class _Files:
    """The examples of a reader that TensorFlow's decoders read from their files, as tensors indexed like the
    reader: paths, sizes, codecs (kerasseg.data.crops.CODECS; -1: decoded by the reader, in Python) and
    whether a mask is a black-and-white picture. From the scan (kerasseg.data.scan: which files decode
    exactly as the reader reads them); None where no example is, or a cache in memory serves them."""

    @staticmethod
    def of(reader, scan):
        if scan is None or reader.cache is not None:
            return None
        rows = []
        for example in reader.examples:
            image, mask = scan.codecs(example) if example.on_disk else (None, None)
            fast = image is not None and mask is not None
            rows.append((example.image if fast else "", example.mask if fast else "",
                         scan.size(example) if fast else (1, 1), image if fast else -1, bool(example.binary_mask)))
        if not any(row[3] >= 0 for row in rows):
            return None
        files = _Files()
        images, masks, sizes, codecs, binary = zip(*rows)
        files.image, files.mask = tf.constant(images), tf.constant(masks)
        files.size, files.codec = tf.constant(sizes, tf.int32), tf.constant(codecs, tf.int32)
        files.binary = tf.constant(binary)
        return files


def _reader_pair(reader, index):
    image, mask = tf.numpy_function(reader, [index], (tf.uint8, tf.uint8))
    return tf.ensure_shape(image, [None, None, 3]), tf.ensure_shape(mask, [None, None])


def _whole(reader, files, index):
    """(image uint8 (H, W, 3), mask uint8 (H, W)) of example `index` at its own size: TensorFlow's decoders for
    the files they read exactly as the reader does, the reader (in Python) for the others."""
    if files is None:
        return _reader_pair(reader, index)

    def decode():
        return (crops.decode_whole(files.image[index], files.codec[index]),
                crops.decode_mask(files.mask[index], files.binary[index]))

    return tf.cond(files.codec[index] >= 0, decode, lambda: _reader_pair(reader, index))


def _indices(reader, shuffle=False, seed=0):
    data = tf.data.Dataset.range(len(reader))
    if shuffle:
        data = data.shuffle(len(reader), seed=seed, reshuffle_each_iteration=True)
    return data


def decoded(reader, shuffle=False, seed=0, scan=None):
    """The (uint8 image (H, W, 3), uint8 mask (H, W)) of every example of `reader` at its own size, streamed
    (`scan`: the scan of its examples, so that the files TensorFlow decodes exactly as the reader does are
    decoded by TensorFlow, in parallel and out of Python's GIL)."""
    files = _Files.of(reader, scan)
    return _indices(reader, shuffle, seed).map(lambda index: _whole(reader, files, index),
                                               num_parallel_calls=tf.data.AUTOTUNE)


def _random_crop(reader, files, index, image_size, scale_range):
    """The "full" augmentation's crop of example `index` (float32 image, int32 mask, where the scaled image lies
    in it: bool), crop first
    (kerasseg.data.crops): from its file's window (TensorFlow's decoders), from the disk cache's window, or
    from the whole pair the reader gives (a cache in memory, a file the reader decodes)."""
    def from_pair(image, mask, origin=(0, 0), height=None, width=None, ratio=1):
        height = tf.shape(mask)[0] if height is None else height
        width = tf.shape(mask)[1] if width is None else width
        scaled, offset = crops.plan(height, width, image_size, scale_range)
        box = tf.stack([origin[0], origin[1], 0, 0])
        return (crops.sample(image, box, ratio, height, width, scaled, offset, image_size),
                crops.sample_mask(mask, origin, height, width, scaled, offset, image_size),
                crops.inside(scaled, offset, image_size))

    def from_reader():
        return from_pair(*_reader_pair(reader, index))

    if files is not None:
        def from_file():
            height, width = files.size[index][0], files.size[index][1]
            scaled, offset = crops.plan(height, width, image_size, scale_range)
            pixels, box, ratio = crops.decode_window(files.image[index], files.codec[index], height, width, scaled,
                                                     offset, image_size)
            mask = crops.decode_mask(files.mask[index], files.binary[index])
            return (crops.sample(pixels, box, ratio, height, width, scaled, offset, image_size),
                    crops.sample_mask(mask, (0, 0), height, width, scaled, offset, image_size),
                    crops.inside(scaled, offset, image_size))

        return tf.cond(files.codec[index] >= 0, from_file, from_reader)
    if isinstance(reader.cache, DiskCache):
        def from_cache():
            whole = tf.numpy_function(lambda i: np.array(reader.cache._load(reader.examples[int(i)]).shape[:2],
                                                         np.int32), [index], tf.int32)
            height, width = whole[0], whole[1]
            scaled, offset = crops.plan(height, width, image_size, scale_range)
            box = crops.window(height, width, scaled, offset, image_size)
            both = tf.ensure_shape(tf.numpy_function(reader.window, [index, box], tf.uint8), [None, None, 4])
            return (crops.sample(both[..., :3], box, 1, height, width, scaled, offset, image_size),
                    crops.sample_mask(both[..., 3], box[:2], height, width, scaled, offset,
                                      image_size), crops.inside(scaled, offset, image_size))

        return tf.cond(tf.numpy_function(reader.cached, [index], tf.bool), from_cache, from_reader)
    return from_reader()


# the colour jitter: brightness +-0.1 of the range, contrast and saturation 0.8-1.2, hue +-0.02 of the circle
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0.1, (0.8, 1.2), (0.8, 1.2), 0.02
_YIQ = tf.constant([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], tf.float32)


def _photometric(image):
    """Brightness, contrast, saturation and hue jitter in one 3x3 colour matrix and offset (each step is linear
    in RGB: saturation scales and hue rotates the chroma plane of YIQ), then clipped to [0, 255]: a tenth of
    the time of tf.image's HSV round trips, which made this the costliest step of a crop."""
    brightness = tf.random.uniform((), -BRIGHTNESS, BRIGHTNESS) * 255.0
    contrast = tf.random.uniform((), *CONTRAST)
    saturation = tf.random.uniform((), *SATURATION)
    angle = tf.random.uniform((), -HUE, HUE) * 2.0 * 3.141592653589793
    cos, sin = tf.cos(angle) * saturation, tf.sin(angle) * saturation
    chroma = tf.stack([tf.stack([1.0, 0.0, 0.0]), tf.stack([0.0, cos, -sin]), tf.stack([0.0, sin, cos])])
    colour = tf.linalg.inv(_YIQ) @ chroma @ _YIQ * contrast  # (RGB -> YIQ, chroma scaled and turned, back)
    mean = tf.reduce_mean(image, axis=[0, 1])  # (contrast about each channel's mean, as tf.image's)
    offset = tf.linalg.matvec(colour, (1.0 - contrast) / contrast * mean + brightness / contrast)
    channels = [image[..., c] for c in range(3)]
    out = [channels[0] * colour[c, 0] + channels[1] * colour[c, 1] + channels[2] * colour[c, 2] + offset[c]
           for c in range(3)]
    return tf.clip_by_value(tf.stack(out, axis=-1), 0.0, 255.0)


def resize(image, mask, image_size):
    """The one resize of every evaluation path: TensorFlow's half-pixel bilinear (no antialiasing) for the
    image, nearest for the mask. Returns a float32 image and an int32 mask."""
    image = tf.image.resize(tf.cast(image, tf.float32), image_size, method="bilinear")
    mask = tf.image.resize(tf.cast(mask, tf.int32)[..., None], image_size, method="nearest")[..., 0]
    return image, mask


def _flip(image, mask):
    flip = tf.random.uniform(()) < 0.5
    return (tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image),
            tf.cond(flip, lambda: tf.reverse(mask, [1]), lambda: mask))


def make_dataset(examples, image_size, batch_size, shuffle=False, seed=0, augment=None, scale_range=SCALE_RANGE,
                 sharded=False, scan=None):
    """Batches of (float32 pixel images, int32 masks) at `image_size`, streamed from `examples`.

    examples: an ExampleReader, or what it reads (kerasseg.data.sources.Example values, files read as they
    are needed; (image, mask) pairs of any sizes in memory; a kerasseg.data.Split).
    augment: None, "flip" or "full" (random scale, crop/pad, flip, photometric: the crop is chosen first and
    only its window decoded and resized, kerasseg.data.crops).
    scan: the scan of the examples (kerasseg.data.scan), which says which files TensorFlow's decoders read as
    the reader does: those are decoded in TensorFlow, in parallel, out of Python's GIL.
    sharded: the examples are this process's part of a multi-worker run's (tf.distribute must not shard them
    again: each worker reads only its own files).
    """
    reader = examples if isinstance(examples, ExampleReader) else ExampleReader(examples)
    files = _Files.of(reader, scan)

    def prepare(index):
        if augment == "full":
            image, mask, inside = _random_crop(reader, files, index, image_size, scale_range)
            # (colour on the image's pixels; the padding where the scaled image ends stays black)
            image = _photometric(image) * tf.cast(inside, tf.float32)[..., None]
            image, mask = _flip(image, mask)
        else:
            image, mask = resize(*_whole(reader, files, index), image_size)
            if augment is None:  # as stored at that size (kerasseg.data.resize_pair): what evaluation scores
                image = tf.clip_by_value(tf.round(image), 0.0, 255.0)
            if augment == "flip":
                image, mask = _flip(image, mask)
        image = tf.ensure_shape(image, [*image_size, 3])
        return image, tf.ensure_shape(mask, list(image_size))

    data = _indices(reader, shuffle, seed).map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    data = data.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    if sharded:
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        data = data.with_options(options)
    return data


def check_cache(value):
    """`value` if it is a cache setting ("auto", "none", "memory", or a directory), else an InputError."""
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value).strip():
        raise InputError(f"cache={value!r} is not one of {', '.join(CACHES)} or a directory")
    return os.fspath(value)
