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

from kerasseg.data.reading import DatasetError, Example, read_example
from kerasseg.errors import InputError
from kerasseg.labels import IGNORE_LABEL

SCALE_RANGE = (0.75, 1.5)
CACHES = ("auto", "none", "memory")  # or a directory
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
    """Decoded examples on disk, one .npz per example named by its files' paths, sizes and modification times
    (an edited file is decoded again), written whole or not at all: any number of epochs, runs and processes
    share it. Examples not on disk are not kept. A write that fails (a full disk) stops the caching, once
    said, and the files are read from then on."""

    def __init__(self, directory):
        from kerasseg import files

        self.directory = os.path.abspath(os.path.expanduser(os.fspath(directory)))
        files.ensure_output_dir(os.path.join(self.directory, "x"))
        self.writable, self._lock = True, threading.Lock()

    def _path(self, example):
        import PIL

        identity = [PIL.__version__]  # (a newer decoder may decode differently)
        for path in (example.image, example.mask):
            st = os.stat(path)
            identity += [os.path.realpath(path), st.st_size, st.st_mtime_ns]
        key = hashlib.sha1(repr(identity).encode("utf-8", "surrogateescape")).hexdigest()
        return os.path.join(self.directory, f"{key}.npz")

    def get(self, example):
        if not example.on_disk:
            return None
        try:
            with np.load(self._path(example)) as saved:
                return saved["image"], saved["mask"]
        except (OSError, ValueError, KeyError, EOFError):  # not cached yet (or a file damaged since)
            return None

    def put(self, example, pair):
        from kerasseg import files

        if not example.on_disk or not self.writable:
            return
        try:
            files.atomic_write(self._path(example), lambda tmp: np.savez(tmp, image=pair[0], mask=pair[1]))
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
    next step, without committing the epoch)."""

    def __init__(self, examples, num_classes=None, cache=None):
        self.examples, self.num_classes, self.cache = _as_examples(examples), num_classes, cache
        self.failure = None

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
            self.failure = self.failure or error
            return np.zeros((1, 1, 3), np.uint8), np.full((1, 1), IGNORE_LABEL, np.uint8)
        image, mask = pair
        return np.asarray(image, np.uint8), np.asarray(mask, np.uint8)


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
    except Exception:
        failure = next((r.failure for r in readers if r.failure), None)
        if failure is None:
            raise
        raise failure from None
    failure = next((r.failure for r in readers if r.failure), None)
    if failure is not None:
        raise failure


def _blank_pair(image_size):
    return np.zeros((*image_size, 3), np.uint8), np.full(image_size, IGNORE_LABEL, np.uint8)


def blank_examples(count, image_size):
    """`count` black examples ignored everywhere: padding that no metric counts."""
    size = tuple(image_size)
    return [Example(f"padding #{i}", None, None, size=size, generate=functools.partial(_blank_pair, size))
            for i in range(count)]


def decoded(reader, shuffle=False, seed=0):
    """The (uint8 image (H, W, 3), uint8 mask (H, W)) of every example of `reader` at its own size, streamed."""
    data = tf.data.Dataset.range(len(reader))
    if shuffle:
        data = data.shuffle(len(reader), seed=seed, reshuffle_each_iteration=True)

    def read(index):
        image, mask = tf.numpy_function(reader, [index], (tf.uint8, tf.uint8))
        return tf.ensure_shape(image, [None, None, 3]), tf.ensure_shape(mask, [None, None])

    return data.map(read, num_parallel_calls=tf.data.AUTOTUNE)


def _random_scale_crop_flip(image, mask, image_size, scale_range, photometric=False):
    height, width = image_size
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    cover = tf.maximum(height / shape[0], width / shape[1])  # the scale at which the image just covers the crop
    scale = cover * tf.random.uniform((), *scale_range)
    new = tf.cast(tf.math.ceil(shape * scale), tf.int32)
    image = tf.image.resize(image, new, method="bilinear")
    if photometric:  # on the scaled image (a photo shrunk to the crop's scale has a fraction of its pixels:
        image = _photometric(image)  # 17 ms at 1024x2048 on one core), before padding, which stays black
    mask = tf.image.resize(mask[..., None], new, method="nearest")
    # pad (image 0, mask ignored) where the scaled image is smaller than the crop
    pad_h, pad_w = tf.maximum(height - new[0], 0), tf.maximum(width - new[1], 0)
    image = tf.pad(image, [[0, pad_h], [0, pad_w], [0, 0]])
    mask = tf.pad(mask - IGNORE_LABEL, [[0, pad_h], [0, pad_w], [0, 0]]) + IGNORE_LABEL
    both = tf.concat([image, tf.cast(mask, tf.float32)], axis=-1)
    both = tf.image.random_crop(both, [height, width, 4])
    both = tf.image.random_flip_left_right(both)
    return both[..., :3], tf.cast(both[..., 3], tf.int32)


def _photometric(image):
    image = image / 255.0
    image = tf.image.random_brightness(image, 0.1)
    image = tf.image.random_contrast(image, 0.8, 1.2)
    image = tf.image.random_saturation(image, 0.8, 1.2)
    image = tf.image.random_hue(image, 0.02)
    return tf.clip_by_value(image, 0.0, 1.0) * 255.0


def resize(image, mask, image_size):
    """The one resize of every evaluation path: TensorFlow's half-pixel bilinear (no antialiasing) for the
    image, nearest for the mask. Returns a float32 image and an int32 mask."""
    image = tf.image.resize(tf.cast(image, tf.float32), image_size, method="bilinear")
    mask = tf.image.resize(tf.cast(mask, tf.int32)[..., None], image_size, method="nearest")[..., 0]
    return image, mask


def make_dataset(examples, image_size, batch_size, shuffle=False, seed=0, augment=None, scale_range=SCALE_RANGE,
                 sharded=False):
    """Batches of (float32 pixel images, int32 masks) at `image_size`, streamed from `examples`.

    examples: an ExampleReader, or what it reads (kerasseg.data.sources.Example values, files read as they
    are needed; (image, mask) pairs of any sizes in memory; a kerasseg.data.Split).
    augment: None, "flip" or "full" (random scale, crop/pad, flip, photometric).
    sharded: the examples are this process's part of a multi-worker run's (tf.distribute must not shard them
    again: each worker reads only its own files).
    """
    reader = examples if isinstance(examples, ExampleReader) else ExampleReader(examples)

    def prepare(image, mask):
        image, mask = tf.cast(image, tf.float32), tf.cast(mask, tf.int32)
        if augment == "full":
            image, mask = _random_scale_crop_flip(image, mask, image_size, scale_range, photometric=True)
        else:
            image, mask = resize(image, mask, image_size)
            if augment is None:  # as stored at that size (kerasseg.data.resize_pair): what evaluation scores
                image = tf.clip_by_value(tf.round(image), 0.0, 255.0)
            if augment == "flip":
                flip = tf.random.uniform(()) < 0.5
                image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
                mask = tf.cond(flip, lambda: tf.reverse(mask, [1]), lambda: mask)
        image = tf.ensure_shape(image, [*image_size, 3])
        return image, tf.ensure_shape(mask, list(image_size))

    data = decoded(reader, shuffle, seed).map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
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
