"""The tf.data pipeline that feeds model.fit (on the TensorFlow and the JAX backend)."""

import tensorflow as tf


def make_dataset(split, batch_size, shuffle=False, seed=0, augment=False):
    """Batches of (uint8 images, int32 masks) from a `kerasseg.data.Split`.

    `augment` flips image and mask together, left-right, at random.
    """
    data = tf.data.Dataset.from_tensor_slices((split.images, split.masks))
    if shuffle:
        data = data.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)

    def prepare(image, mask):
        image, mask = tf.cast(image, tf.float32), tf.cast(mask, tf.int32)
        if augment:
            flip = tf.random.uniform((), seed=seed) < 0.5
            image = tf.cond(flip, lambda: tf.image.flip_left_right(image), lambda: image)
            mask = tf.cond(flip, lambda: tf.reverse(mask, axis=[1]), lambda: mask)
        return image, mask

    data = data.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)
