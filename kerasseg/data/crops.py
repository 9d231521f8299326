"""Crop first: the training's random scale and crop, chosen in the source image's coordinates, so that only the
window the crop needs is decoded and resized (in TensorFlow ops: out of Python's GIL, in parallel).

The training augmentation ("full") scales each image so that it just covers the crop, times a random factor,
pads it where it falls short and crops a random window. Done in that order, a 2-megapixel photo is decoded
whole and resized whole for a crop of a quarter of it or less. Here the same geometry is computed first:

- the scaled size (Hs, Ws) = ceil((h, w) * scale), and the crop's offset in it, as before;
- the source window the crop reads: the rows and columns its bilinear taps touch, with a margin of MARGIN
  pixels (a JPEG decoded cropped equals the whole decode inside the window only away from its edges, where
  chroma upsampling needs the neighbours);
- the window decoded (a JPEG with `tf.io.decode_and_crop_jpeg`, at a DCT ratio of 2, 4 or 8 where the scale
  is at or below its inverse, as libjpeg downscales while decoding; a PNG decoded whole and sliced), or
  sliced from an image already decoded;
- the crop sampled from it with TensorFlow's half-pixel bilinear rule at exactly the positions the old
  resize-then-crop read (the mask: nearest, from the mask decoded whole: a mask is one channel, and must not
  be resampled before it is cropped), padding (image 0, mask the ignore label) where the scaled image ends.
"""

import tensorflow as tf

from kerasseg.labels import IGNORE_LABEL

MARGIN = 16  # source pixels decoded around the window the crop reads
JPEG = "INTEGER_ACCURATE"  # libjpeg's accurate DCT: the pixels Pillow decodes (its default), exactly


def plan(height, width, image_size, scale_range):
    """The crop of an image of (height, width) (int tensors): (scaled size (Hs, Ws), the crop's offset (oy, ox)
    in the scaled image), the scale drawn at random around the covering one."""
    out_h, out_w = image_size
    shape = tf.cast(tf.stack([height, width]), tf.float32)
    cover = tf.maximum(out_h / shape[0], out_w / shape[1])  # the scale at which the image just covers the crop
    scale = cover * tf.random.uniform((), *scale_range)
    scaled = tf.cast(tf.math.ceil(shape * scale), tf.int32)
    oy = tf.random.uniform((), 0, tf.maximum(scaled[0] - out_h, 0) + 1, tf.int32)
    ox = tf.random.uniform((), 0, tf.maximum(scaled[1] - out_w, 0) + 1, tf.int32)
    return scaled, tf.stack([oy, ox])


def _positions(offset, count, scaled, source, clamp=True):
    """The source coordinates (float32, clamped to the image unless not `clamp`) that a resize of `source` to
    `scaled` pixels samples for the `count` output pixels from `offset` (TensorFlow's half-pixel rule)."""
    ratio = tf.cast(source, tf.float32) / tf.cast(scaled, tf.float32)
    out = tf.cast(offset + tf.range(count), tf.float32)
    positions = (out + 0.5) * ratio - 0.5
    return tf.clip_by_value(positions, 0.0, tf.cast(source - 1, tf.float32)) if clamp else positions


def window(height, width, scaled, offset, image_size):
    """[y0, x0, y1, x1]: the source rows and columns the crop's bilinear taps touch, MARGIN pixels wider, within
    the image."""
    ys = _positions(offset[0], image_size[0], scaled[0], height)
    xs = _positions(offset[1], image_size[1], scaled[1], width)
    y0 = tf.maximum(tf.cast(tf.floor(ys[0]), tf.int32) - MARGIN, 0)
    x0 = tf.maximum(tf.cast(tf.floor(xs[0]), tf.int32) - MARGIN, 0)
    y1 = tf.minimum(tf.cast(tf.math.ceil(ys[-1]), tf.int32) + 1 + MARGIN, height)
    x1 = tf.minimum(tf.cast(tf.math.ceil(xs[-1]), tf.int32) + 1 + MARGIN, width)
    return tf.stack([y0, x0, y1, x1])


def dct_ratio(height, width, scaled):
    """The largest JPEG DCT ratio (1, 2, 4 or 8) at or below the downscale in both directions."""
    downscale = tf.minimum(tf.cast(height, tf.float32) / tf.cast(scaled[0], tf.float32),
                           tf.cast(width, tf.float32) / tf.cast(scaled[1], tf.float32))
    return tf.where(downscale >= 8.0, 8, tf.where(downscale >= 4.0, 4, tf.where(downscale >= 2.0, 2, 1)))


def sample(pixels, box, ratio, height, width, scaled, offset, image_size):
    """The crop (float32 (H, W, 3)) from `pixels`, the window `box` of the image decoded at 1/`ratio` of its
    size (`box` in full-size coordinates), as resizing the whole image to `scaled` and cropping at `offset`
    gives it; where the scaled image ends, 0."""
    # (a pixel k of a 1/ratio decode covers source pixels [k * ratio, (k + 1) * ratio): the window is the
    # image at scale ratio / size * scaled, its first pixel box // ratio; ScaleAndTranslate's triangle kernel
    # without antialiasing is the half-pixel bilinear resize, its taps off the window's edge dropped, which
    # is the resize's clamp there)
    start = tf.cast(box[:2] // ratio, tf.float32)
    scale = tf.cast(ratio, tf.float32) * tf.cast(scaled, tf.float32) / tf.cast(tf.stack([height, width]), tf.float32)
    crop = tf.raw_ops.ScaleAndTranslate(images=pixels[None], size=image_size, scale=scale,
                                        translation=start * scale - tf.cast(offset, tf.float32),
                                        kernel_type="triangle", antialias=False)[0]
    return crop * tf.cast(inside(scaled, offset, image_size), tf.float32)[..., None]


def inside(scaled, offset, image_size):
    """(H, W) bool: the crop's pixels that lie in the scaled image (the others are padding)."""
    rows = offset[0] + tf.range(image_size[0]) < scaled[0]
    cols = offset[1] + tf.range(image_size[1]) < scaled[1]
    return rows[:, None] & cols[None, :]


def sample_mask(mask, origin, height, width, scaled, offset, image_size):
    """The crop (int32) from `mask` (any integer type), the mask's rows and columns from `origin` (y0, x0) on (the
    whole mask: (0, 0)): nearest (TensorFlow's half-pixel rule), the ignore label where the scaled image ends."""
    def nearest(offset, count, scaled, source):
        ratio = tf.cast(source, tf.float32) / tf.cast(scaled, tf.float32)
        out = tf.cast(offset + tf.range(count), tf.float32)
        return tf.minimum(tf.cast(tf.floor((out + 0.5) * ratio), tf.int32), source - 1)

    rows = nearest(offset[0], image_size[0], scaled[0], height) - origin[0]
    cols = nearest(offset[1], image_size[1], scaled[1], width) - origin[1]
    crop = tf.cast(tf.gather(tf.gather(mask, rows, axis=0), cols, axis=1), tf.int32)
    return tf.where(inside(scaled, offset, image_size), crop, IGNORE_LABEL)


CODECS = ("png", "jpeg")  # the files decoded by TensorFlow's ops (kerasseg.data.scan decides which files are)


def decode_window(path, codec, height, width, scaled, offset, image_size):
    """(the pixels of the window of the image file at `path` (codec 0 "png", 1 "jpeg": CODECS) the crop reads,
    the window [y0, x0, y1, x1] in full-size coordinates, the DCT ratio it was decoded at)."""
    box = window(height, width, scaled, offset, image_size)
    data = tf.io.read_file(path)

    def png():  # (a PNG cannot be decoded in part: whole, then sliced)
        return tf.io.decode_png(data, channels=3, dtype=tf.uint8)[box[0]:box[2], box[1]:box[3]], tf.constant(1)

    def jpeg(ratio):
        def decode():
            y0, x0 = box[0] // ratio, box[1] // ratio  # (a 1/ratio decode is ceil(size / ratio) pixels)
            y1 = tf.maximum(tf.minimum(-(-box[2] // ratio), -(-height // ratio)), y0 + 1)
            x1 = tf.maximum(tf.minimum(-(-box[3] // ratio), -(-width // ratio)), x0 + 1)
            pixels = tf.io.decode_and_crop_jpeg(data, tf.stack([y0, x0, y1 - y0, x1 - x0]), channels=3,
                                                ratio=ratio, dct_method=JPEG)
            return pixels, tf.constant(ratio)

        return decode

    steps = tf.cast(tf.math.log(tf.cast(dct_ratio(height, width, scaled), tf.float32)) / tf.math.log(2.0) + 0.5,
                    tf.int32)
    branch = tf.where(codec == 0, 0, 1 + steps)
    pixels, ratio = tf.switch_case(branch, [png, jpeg(1), jpeg(2), jpeg(4), jpeg(8)])
    return tf.ensure_shape(pixels, [None, None, 3]), box, ratio


def decode_whole(path, codec):
    """The whole image file at `path` decoded by TensorFlow (codec as decode_window's): the reader's pixels."""
    data = tf.io.read_file(path)
    pixels = tf.cond(codec == 0, lambda: tf.io.decode_png(data, channels=3, dtype=tf.uint8),
                     lambda: tf.io.decode_jpeg(data, channels=3, dct_method=JPEG))
    return tf.ensure_shape(pixels, [None, None, 3])


def decode_mask(path, binary=False):
    """The 8-bit grayscale PNG mask at `path` (H, W) uint8, as kerasseg.data.reading.read_mask reads it
    (`binary`: a black-and-white picture of the foreground, 1 from BINARY_THRESHOLD)."""
    from kerasseg.data.reading import BINARY_THRESHOLD

    mask = tf.io.decode_png(tf.io.read_file(path), channels=1, dtype=tf.uint8)[..., 0]
    return tf.where(tf.logical_and(binary, mask >= BINARY_THRESHOLD), tf.ones_like(mask),
                    tf.where(binary, tf.zeros_like(mask), mask))
