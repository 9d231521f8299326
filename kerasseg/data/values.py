"""What an export (and quantization-aware training) is calibrated with and checked on, taken as the user has it.

Images are raw pixels, (N, H, W, 3) in [0, 255] (any dtype), given as

- an array (N, H, W, 3);
- a `tf.data.Dataset` of images or of (image, mask) pairs, batched or not (a dict element: its "images" or
  "image", and a mask under a key naming a mask or a segmentation: keras-hub's "segmentation_masks",
  TFDS's "segmentation_mask", "mask");
- any iterable of images or of (image, mask) pairs;
- a dataset spec string (kerasseg.data: `folder:DIR`, `voc:DIR`, `shapes`, ...): its training split to
  calibrate with, its test split to check on;
- a kerasseg.data.Split.

Validation samples may also be the tuple (images, masks), masks (N, H, W) of class indices, or one
(image, mask); images without masks still measure the agreement (pixels and logits), not the mIoU. Each
image is resized to the export size (bilinear; masks nearest), as the training pipeline resizes.

How many are read: `count` of them, by default DEFAULT_CALIBRATION_SAMPLES (200) to calibrate on and
DEFAULT_SAMPLES (50) to check on, as the command lines do (a note says so when more were given); "all"
reads every one, and refuses a pipeline that never ends (`repeat()`).
"""

import itertools
import sys

import numpy as np

from kerasseg import data
from kerasseg.errors import InputError

_IMAGE_KEYS = ("images", "image")
ACCEPTED = ("images (N, H, W, 3), an (images, masks) tuple, a tf.data.Dataset, an iterable of images or of (image, "
            "mask) pairs, or a dataset spec")
DEFAULT_CALIBRATION_SAMPLES, DEFAULT_SAMPLES = 200, 50  # how many are read unless told (the command lines' too)


def _dict_pair(element, what):
    """(image, mask or None) of a dict element: its image key, and a key naming a mask or a segmentation."""
    image = next((k for k in _IMAGE_KEYS if k in element), None)
    if image is None:
        raise InputError(f"{what}: a dataset element with keys {sorted(element)}; expected "
                         f"{' or '.join(map(repr, _IMAGE_KEYS))} (and a mask's key: 'segmentation_mask', "
                         "'segmentation_masks' or 'mask')")
    mask = next((k for k in sorted(element) if "mask" in k or "segmentation" in k), None)
    return element[image], None if mask is None else element[mask]


def _limit(count, default):
    """The number of samples to read (None: every one) for `count` as given (None: `default`; "all")."""
    if count is None:
        return default
    if count == "all":
        return None
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise InputError(f"the number of samples must be a positive integer or 'all'; received {count!r}")
    return int(count)


def _pairs(value, what, count, default):
    """((image, mask or None) pairs of `value` (anything but a spec or a Split), whether there were more): the
    first `count` (`_limit`)."""
    limit = _limit(count, default)
    if isinstance(value, tuple) and len(value) == 2 and np.ndim(value[0]) == 3 and np.ndim(value[1]) in (2, 3):
        value = (np.asarray(value[0])[None], np.asarray(value[1])[None])  # one (image, mask)
    if isinstance(value, tuple) and len(value) == 2 and np.ndim(value[0]) == 4:  # (images, masks)
        images, masks = value
        if masks is not None and len(masks) != len(images):
            raise InputError(f"{what}: {len(images)} images but {len(masks)} masks")
        pairs = list(zip(images[:limit], masks[:limit] if masks is not None else itertools.repeat(None)))
        return pairs, len(images) > len(pairs)
    if isinstance(value, np.ndarray) or hasattr(value, "shape") and not hasattr(value, "element_spec"):
        array = np.asarray(value)
        if array.ndim != 4:
            raise InputError(f"{what}: expected {ACCEPTED}; received an array of shape {array.shape}"
                             + (" (grayscale images: give them as RGB, np.repeat(images[..., None], 3, -1))"
                                if array.ndim == 3 else ""))
        return [(image, None) for image in array[:limit]], len(array) > (limit or len(array))
    if hasattr(value, "element_spec"):  # tf.data.Dataset
        import tensorflow as tf

        endless = int(value.cardinality()) == tf.data.INFINITE_CARDINALITY
        if limit is None and endless:
            raise InputError(f"{what}: the tf.data.Dataset never ends (repeat() without a count), so 'all' of it "
                             "cannot be read: give a number of samples")
        if endless:
            pairs, _ = _pairs(value.as_numpy_iterator(), what, count, default)
            return pairs, "endless"
        value = value.as_numpy_iterator()
    try:
        elements = iter(value)
    except TypeError:
        raise InputError(f"{what}: expected {ACCEPTED}; received {type(value).__name__}") from None
    pairs = []
    for element in elements:
        if limit is not None and len(pairs) >= limit:
            return pairs[:limit], True
        if isinstance(element, dict):
            element = _dict_pair(element, what)
        # (image, mask), or Keras's (x, y, sample_weight)
        image, mask = element[:2] if isinstance(element, (tuple, list)) and len(element) in (2, 3) else (element, None)
        if np.ndim(image) == 4:  # a batch
            masks = itertools.repeat(None) if mask is None else mask
            pairs += zip(np.asarray(image), masks)
        else:
            pairs.append((image, mask))
    return pairs[:limit], limit is not None and len(pairs) > limit


def _noted(pairs, more, what, count):
    """`pairs`, saying on stderr when the default number of them was read and more were given."""
    if more == "endless" and count is None:
        print(f"note: {what}: the tf.data pipeline never ends (repeat()): its first {len(pairs)} samples are used, "
              "repeats among them if it repeats fewer (give the number of samples to use)", file=sys.stderr)
    elif more and count is None:
        print(f"note: {what}: the first {len(pairs)} samples of those given are used (give a number of samples, "
              "or 'all', for more)", file=sys.stderr)
    return pairs


def _checked(pairs, what, start=0):
    """`pairs` as (image (H, W, 3): uint8, or float32 pixels with fractions; mask (H, W) uint8 or None); an
    error names the pair by its index (counted from `start`)."""
    checked = []
    for index, (image, mask) in enumerate(pairs, start):
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise InputError(f"{what}: image {index} has shape {image.shape}; expected (height, width, 3) RGB pixels")
        if not np.isfinite(image).all():
            raise InputError(f"{what}: image {index} holds {int((~np.isfinite(image)).sum())} NaN or infinite values; "
                             "expected raw pixels in [0, 255]")
        low, high = float(image.min()), float(image.max())
        if low < 0 or high > 255:
            raise InputError(f"{what}: image {index} has values {low:g}..{high:g}; expected raw pixels in [0, 255] "
                             "(the model takes pixels: its normalization is inside it)")
        image = image.astype(np.uint8 if np.array_equal(image, np.round(image)) else np.float32)
        if mask is not None:
            mask = np.asarray(mask)
            if mask.ndim == 3 and mask.shape[-1] == 1:
                mask = mask[..., 0]
            if mask.shape != image.shape[:2]:
                raise InputError(f"{what}: mask {index} has shape {mask.shape}; expected {image.shape[:2]}, its "
                                 "image's height and width, of class indices")
            if mask.size and (mask.min() < 0 or mask.max() > 255 or not np.array_equal(mask, np.round(mask))):
                odd = np.unique(mask[(mask < 0) | (mask > 255) | (mask != np.round(mask))])[:5].tolist()
                raise InputError(f"{what}: mask {index} holds {odd}; expected whole class indices (or "
                                 f"{data.IGNORE_LABEL}, ignored)")
            mask = mask.astype(np.uint8)
        checked.append((image, mask))
    if checked and all(image.dtype == np.float32 for image, _ in checked) and \
            max(float(image.max()) for image, _ in checked) <= 1.0:
        raise InputError(f"{what}: every image's values lie in [0, 1]; expected raw pixels in [0, 255] (multiply "
                         "by 255: the model takes pixels, its normalization is inside it)")
    return checked


def natural_size(value):
    """The (height, width) every image of `value` has when `value` says so without being read (an array,
    an (images, masks) tuple, a Split, a tf.data.Dataset of fixed-size elements, a list), else None."""
    if isinstance(value, tuple) and len(value) == 2 and np.ndim(value[0]) == 3:  # one (image, mask)
        return tuple(np.shape(value[0])[:2])
    if isinstance(value, data.Split) or isinstance(value, tuple) and len(value) == 2 and np.ndim(value[0]) == 4:
        value = value.images if isinstance(value, data.Split) else value[0]
    if hasattr(value, "element_spec"):
        spec = value.element_spec
        spec = spec[0] if isinstance(spec, tuple) else spec.get("images", spec.get("image")) if isinstance(
            spec, dict) else spec
        shape = getattr(spec, "shape", None)
        size = tuple(shape[-3:-1]) if shape is not None and shape.rank in (3, 4) else ()
        return size if len(size) == 2 and None not in size else None
    if hasattr(value, "shape") and len(value.shape) == 4:
        return tuple(int(n) for n in value.shape[1:3])
    if isinstance(value, list):  # images, or (image, mask) pairs, already read
        sizes = {tuple(np.shape(v[0] if isinstance(v, (tuple, list)) else v)[-3:-1]) for v in value}
        return sizes.pop() if len(sizes) == 1 else None
    return None


def calibration_images(value, image_size=None, count=None):
    """(images (N, H, W, 3) float32 pixels at `image_size` (None: the first image's), a description of where
    they came from): the first `count` (None: DEFAULT_CALIBRATION_SAMPLES; "all")."""
    limit = _limit(count, DEFAULT_CALIBRATION_SAMPLES)
    if isinstance(value, (data.Pairs, data.Split)):
        fewer(len(value), count, "calibration", value.spec or "the images given")
    if isinstance(value, data.Pairs):
        value = data.Split(np.stack([data.resize_pair(image, mask, image_size)[0] for image, mask in
                                     value.pairs[:limit]]), None, value.class_names, 0, value.spec)
    if isinstance(value, data.Split):
        value = data.Split(value.images[:limit], None, value.class_names, value.resized, value.spec)
        image_size = image_size or value.images.shape[1:3]
        return _resized(value, image_size).images.astype(np.float32), value.spec or "given images"
    if isinstance(value, str):
        if image_size is None:
            raise InputError(f"calibration: dataset {value!r} is read at the size the model was trained at, and "
                             "this model does not carry one (kerasseg.describe(model, image_size=...)); or give the "
                             "images themselves")
        split = data.load_split(value, "train", image_size, limit)
        fewer(len(split), count, "calibration", split.spec)
        return split.images.astype(np.float32), split.spec
    pairs = _checked(_noted(*_pairs(value, "calibration", count, DEFAULT_CALIBRATION_SAMPLES), "calibration", count),
                     "calibration")
    if not pairs:
        raise InputError("calibration: no images; int8 quantization needs calibration images")
    image_size = tuple(image_size or pairs[0][0].shape[:2])
    resized = sum(image.shape[:2] != tuple(image_size) for image, _ in pairs)
    if resized:
        print(f"note: {resized} of the {len(pairs)} calibration images were resized to {image_size[0]}x"
              f"{image_size[1]}, the export size (bilinear)", file=sys.stderr)
    images = [data.resize_pair(image, _blank(image), image_size)[0] for image, _ in pairs]
    return np.stack(images).astype(np.float32), "given images"


def held_out(value, count=None, image_size=None):
    """(the first `count` (None: DEFAULT_SAMPLES; "all") held-out (image, mask or None) pairs of `value`, each at
    its own size and checked, where they came from, the dataset's class names or None): `value` as
    validation= takes it (a spec: its test split, `shapes` made at `image_size`)."""
    limit = _limit(count, DEFAULT_SAMPLES)
    if isinstance(value, data.Pairs):
        found = list(value.pairs[:limit]), value.spec, value.class_names
    elif isinstance(value, data.Split):
        masks = value.masks[:limit] if value.masks is not None else itertools.repeat(None)
        found = list(zip(value.images[:limit], masks)), value.spec or "given images", value.class_names
    elif isinstance(value, str):
        pairs, names = data.load_examples(value, "test", image_size or (64, 64), limit)
        found = pairs, value, names
    else:
        pairs = _checked(_noted(*_pairs(value, "validation", count, DEFAULT_SAMPLES), "validation", count),
                         "validation")
        if not pairs:
            raise InputError("validation: no images; the exported file is checked on held-out images")
        with_masks = [mask is not None for _, mask in pairs]
        if any(with_masks) and not all(with_masks):
            raise InputError("validation: some images have masks and some do not; give masks for all or none")
        found = pairs, f"given images{' and masks' if all(with_masks) else ''}", None
    fewer(len(found[0]), count, "validation", found[1])
    return found


def fewer(found, count, what, where):
    """Says on stderr when fewer samples than the `count` asked for exist (`found` of them)."""
    if isinstance(count, (int, np.integer)) and not isinstance(count, bool) and found < count:
        print(f"note: {what}: {count} samples asked for, and {where} has {found}: all {found} are used",
              file=sys.stderr)


def prepared(pairs, image_size, class_names, spec=None):
    """A kerasseg.data.Split of held-out `pairs` (held_out's) as an app feeds a file of `image_size`: each
    image resized to it whole, aspect not kept (MediaPipe's ImageSegmenter stretches a camera frame so;
    bilinear, rounded to pixel values), its mask too (nearest), and the masks at their own sizes kept as
    `labels`, where the check scores (masks None: images without masks). Mask values are checked against
    `class_names`' indices (or IGNORE_LABEL)."""
    from kerasseg.resample import resize_image, resize_mask

    names = tuple(class_names)
    _check_classes(pairs, names, "validation")
    size = tuple(image_size)
    images = np.stack([resize_image(image, size) for image, _ in pairs])
    resized = sum(image.shape[:2] != size for image, _ in pairs)
    if any(mask is None for _, mask in pairs):
        return data.Split(images, None, names, resized, spec)
    labels = [np.asarray(mask, np.uint8) for _, mask in pairs]
    masks = np.stack([resize_mask(mask, size) for mask in labels])
    return _counted(data.Split(images, masks, names, resized, spec, labels))


def validation_samples(value, image_size, class_names, count=None):
    """The first `count` (None: DEFAULT_SAMPLES; "all") held-out samples of `value` prepared at `image_size`
    (held_out, then prepared: their masks kept at their own sizes too), their masks' class indices those of
    `class_names` (or IGNORE_LABEL); a dataset spec's own class names."""
    pairs, spec, names = held_out(value, count, image_size)
    return prepared(pairs, image_size, names or class_names, spec)


def labelled_pairs(value, class_names, what="evaluation"):
    """Every (image, mask) pair of `value` (an (images, masks) tuple, one (image, mask), a tf.data.Dataset or
    an iterable of pairs, as `validation=` takes them), checked as the exporters check theirs: RGB pixels in
    [0, 255], each mask its image's height and width, of `class_names`' indices or IGNORE_LABEL, not every
    pixel ignored."""
    if isinstance(value, np.ndarray) or hasattr(value, "shape") and not hasattr(value, "element_spec"):
        raise InputError(f"{what}: images alone cannot be scored; give (images, masks), the masks' class indices "
                         f"for {len(class_names)} classes")
    pairs = _checked(_pairs(value, what, "all", None)[0], what)
    if not pairs or any(mask is None for _, mask in pairs):
        raise InputError(f"{what}: every image needs its mask of class indices to be scored; received "
                         f"{sum(mask is not None for _, mask in pairs)} masks for {len(pairs)} images")
    _check_classes(pairs, tuple(class_names), what)
    if all((mask == data.IGNORE_LABEL).all() for _, mask in pairs):
        raise InputError(f"{what}: every pixel of the {len(pairs)} masks is the ignore label {data.IGNORE_LABEL}: "
                         "no IoU can be scored on them")
    return pairs


def checked_image(image, index=0, what="predict"):
    """`image` (the `index`-th given) as (height, width, 3) raw pixels (uint8, or float32 with fractions), or
    an InputError as the exporters word theirs (a shape, NaN, values out of [0, 255] or all within [0, 1])."""
    return _checked([(image, None)], what, index)[0][0]


def _check_classes(pairs, names, what):
    for index, (_, mask) in enumerate(pairs):
        wrong = np.setdiff1d(mask, [*range(len(names)), data.IGNORE_LABEL]) if mask is not None else ()
        if len(wrong):
            raise InputError(f"{what}: mask {index} holds {wrong[:5].tolist()}; expected class indices "
                             f"0..{len(names) - 1} ({len(names)} classes) or {data.IGNORE_LABEL} (ignored)")


def _counted(split):
    """`split`, unless its masks count no pixel (all the ignore label): an InputError, as no mIoU could be."""
    if split.masks is not None and len(split.masks) and (split.masks == data.IGNORE_LABEL).all():
        raise InputError(f"validation: every pixel of the {len(split.masks)} masks ({split.spec or 'given'}) is the "
                         f"ignore label {data.IGNORE_LABEL}: no mIoU can be scored on them; give masks with classes, "
                         "or the images without masks (agreement alone)")
    return split


def _blank(image):
    """A mask of zeros for an image without one (the pair resizing resizes pairs)."""
    return np.zeros(image.shape[:2], np.uint8)


def _without_masks(split):
    return data.Split(split.images, None, split.class_names, split.resized, split.spec)


def _resized(split, image_size):
    if split.images.shape[1:3] == tuple(image_size):
        return split
    masks = split.masks if split.masks is not None else itertools.repeat(None)
    pairs = [(image, _blank(image) if mask is None else mask) for image, mask in zip(split.images, masks)]
    resized = data.to_split(pairs, split.class_names, image_size, split.spec)
    return resized if split.masks is not None else _without_masks(resized)
