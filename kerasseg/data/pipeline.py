"""The tf.data pipeline that feeds model.fit (on the TensorFlow and the JAX backend).

Training batches: each (image, mask) pair at its own size is scaled so that
it covers the crop (times a random factor in `scale_range`), padded where it
falls short (image with 0, mask with the ignore label, so padding is never
learnt), randomly cropped to `image_size` and flipped left-right, image and
mask together; brightness, contrast, saturation and hue jitter touch the
image only (`augment="flip"`: the flip alone). Evaluation batches are the
pairs resized to `image_size`. The pairs arrive decoded and checked
(kerasseg.data.load_examples) and stay in memory: pairs of one size as one
tensor, pairs of many sizes through a generator; decoding and augmentation
run in parallel map calls, and batches are prefetched.
"""

import numpy as np
import tensorflow as tf

from kerasseg.labels import IGNORE_LABEL

SCALE_RANGE = (0.75, 1.5)


def _generator(pairs):
    def generate():
        for image, mask in pairs:
            yield image, mask

    return generate


def _random_scale_crop_flip(image, mask, image_size, scale_range):
    height, width = image_size
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    cover = tf.maximum(height / shape[0], width / shape[1])  # the scale at which the image just covers the crop
    scale = cover * tf.random.uniform((), *scale_range)
    new = tf.cast(tf.math.ceil(shape * scale), tf.int32)
    image = tf.image.resize(image, new, method="bilinear")
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


def make_dataset(pairs, image_size, batch_size, shuffle=False, seed=0, augment=None, scale_range=SCALE_RANGE):
    """Batches of (float32 pixel images, int32 masks) at `image_size` from (image, mask) pairs.

    augment: None, "flip" or "full" (random scale, crop/pad, flip, photometric).

    `pairs`: a list of (H, W, 3) uint8 images and (H, W) uint8 masks of any
    sizes, or a kerasseg.data.Split.
    """
    if hasattr(pairs, "images"):
        pairs = list(zip(pairs.images, pairs.masks))
    signature = (tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([None, None], tf.uint8))
    if len({p[0].shape for p in pairs}) == 1:
        data = tf.data.Dataset.from_tensor_slices((np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])))
    else:
        data = tf.data.Dataset.from_generator(_generator(pairs), output_signature=signature)
        data = data.apply(tf.data.experimental.assert_cardinality(len(pairs)))
    if shuffle:
        data = data.shuffle(len(pairs), seed=seed, reshuffle_each_iteration=True)

    def prepare(image, mask):
        image, mask = tf.cast(image, tf.float32), tf.cast(mask, tf.int32)
        if augment == "full":  # colour first: the padding stays black
            image, mask = _random_scale_crop_flip(_photometric(image), mask, image_size, scale_range)
        else:
            image, mask = resize(image, mask, image_size)
            if augment == "flip":
                flip = tf.random.uniform(()) < 0.5
                image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
                mask = tf.cond(flip, lambda: tf.reverse(mask, [1]), lambda: mask)
        image = tf.ensure_shape(image, [*image_size, 3])
        return image, tf.ensure_shape(mask, list(image_size))

    data = data.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)
