"""What an export is calibrated with and checked on, taken as the user has it.

Images are raw pixels, (N, H, W, 3) in [0, 255] (any dtype), given as

- an array (N, H, W, 3);
- a `tf.data.Dataset` of images or of (image, mask) pairs, batched or not (a dict element: its "images"
  and "segmentation_masks", keras-hub's names, or "image" and "mask");
- any iterable of images or of (image, mask) pairs;
- a dataset spec string (kerasseg.data: `folder:DIR`, `voc:DIR`, `shapes`, ...): its training split to
  calibrate with, its test split to check on;
- a kerasseg.data.Split.

Validation samples may also be the tuple (images, masks), masks (N, H, W) of class indices; images
without masks still measure the agreement (pixels and logits), not the mIoU. Each image is resized to
the export size (bilinear; masks nearest), as the training pipeline resizes.
"""

import itertools
import sys

import numpy as np

from kerasseg import data
from kerasseg.errors import InputError

_DICT_KEYS = (("images", "segmentation_masks"), ("image", "mask"))
ACCEPTED = ("images (N, H, W, 3), an (images, masks) tuple, a tf.data.Dataset, an iterable of images or of (image, "
            "mask) pairs, or a dataset spec")


def _pairs(value, what, count):
    """(image, mask or None) pairs of `value` (anything but a spec or a Split), the first `count`."""
    if isinstance(value, tuple) and len(value) == 2 and np.ndim(value[0]) == 4:  # (images, masks)
        images, masks = value
        if masks is not None and len(masks) != len(images):
            raise InputError(f"{what}: {len(images)} images but {len(masks)} masks")
        return list(zip(images[:count], masks[:count] if masks is not None else itertools.repeat(None)))
    if isinstance(value, np.ndarray) or hasattr(value, "shape") and not hasattr(value, "element_spec"):
        array = np.asarray(value)
        if array.ndim != 4:
            raise InputError(f"{what}: expected {ACCEPTED}; received an array of shape {array.shape}")
        return [(image, None) for image in array[:count]]
    if hasattr(value, "element_spec"):  # tf.data.Dataset
        value = value.as_numpy_iterator()
    try:
        elements = iter(value)
    except TypeError:
        raise InputError(f"{what}: expected {ACCEPTED}; received {type(value).__name__}") from None
    pairs = []
    for element in elements:
        if isinstance(element, dict):
            keys = next((k for k in _DICT_KEYS if k[0] in element), None)
            if keys is None:
                raise InputError(f"{what}: a dataset element with keys {sorted(element)}; expected "
                                 f"{' or '.join(repr(k[0]) for k in _DICT_KEYS)} (and the mask's key)")
            element = (element[keys[0]], element.get(keys[1]))
        # (image, mask), or Keras's (x, y, sample_weight)
        image, mask = element[:2] if isinstance(element, (tuple, list)) and len(element) in (2, 3) else (element, None)
        if np.ndim(image) == 4:  # a batch
            masks = itertools.repeat(None) if mask is None else mask
            pairs += zip(np.asarray(image), masks)
        else:
            pairs.append((image, mask))
        if count is not None and len(pairs) >= count:
            break
    return pairs[:count]


def _checked(pairs, what):
    """`pairs` as (image (H, W, 3): uint8, or float32 pixels with fractions; mask (H, W) uint8 or None)."""
    checked = []
    for index, (image, mask) in enumerate(pairs):
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise InputError(f"{what}: image {index} has shape {image.shape}; expected (height, width, 3) RGB pixels")
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


SPEC_CALIBRATION_SAMPLES, SPEC_SAMPLES = 200, 50  # how many of a dataset spec's images, by default


def calibration_images(value, image_size, count=None):
    """(images (N, H, W, 3) float32 pixels at `image_size`, a description of where they came from): the first
    `count` (None: all given; of a dataset spec, SPEC_CALIBRATION_SAMPLES)."""
    if isinstance(value, data.Split):
        value = data.Split(value.images[:count], None, value.class_names, value.resized, value.spec)
        return _resized(value, image_size).images.astype(np.float32), value.spec or "given images"
    if isinstance(value, str):
        split = data.load_split(value, "train", image_size, count or SPEC_CALIBRATION_SAMPLES)
        return split.images.astype(np.float32), split.spec
    pairs = _checked(_pairs(value, "calibration", count), "calibration")
    if not pairs:
        raise InputError("calibration: no images; int8 quantization needs calibration images")
    resized = sum(image.shape[:2] != tuple(image_size) for image, _ in pairs)
    if resized:
        print(f"note: {resized} of the {len(pairs)} calibration images were resized to {image_size[0]}x"
              f"{image_size[1]}, the export size (bilinear)", file=sys.stderr)
    images = [data.resize_pair(image, _blank(image), image_size)[0] for image, _ in pairs]
    return np.stack(images).astype(np.float32), "given images"


def validation_samples(value, image_size, class_names, count=None):
    """A kerasseg.data.Split of the samples to check on, at `image_size` (masks None: images alone), their
    masks' class indices those of `class_names` (or IGNORE_LABEL): the first `count` (None: all given; of a
    dataset spec, SPEC_SAMPLES)."""
    if isinstance(value, data.Split):
        masks = None if value.masks is None else value.masks[:count]
        return _resized(data.Split(value.images[:count], masks, value.class_names, value.resized, value.spec),
                        image_size)
    if isinstance(value, str):
        return data.load_split(value, "test", image_size, count or SPEC_SAMPLES)
    pairs = _checked(_pairs(value, "validation", count), "validation")
    if not pairs:
        raise InputError("validation: no images; the exported file is checked on held-out images")
    with_masks = [mask is not None for _, mask in pairs]
    if any(with_masks) and not all(with_masks):
        raise InputError("validation: some images have masks and some do not; give masks for all or none")
    names = tuple(class_names)
    for index, (_, mask) in enumerate(pairs):
        wrong = np.setdiff1d(mask, [*range(len(names)), data.IGNORE_LABEL]) if mask is not None else ()
        if len(wrong):
            raise InputError(f"validation: mask {index} holds {wrong[:5].tolist()}; expected class indices "
                             f"0..{len(names) - 1} ({len(names)} classes) or {data.IGNORE_LABEL} (ignored)")
    blank = [(image, _blank(image) if mask is None else mask) for image, mask in pairs]
    split = data.to_split(blank, names, image_size, f"given images{' and masks' if all(with_masks) else ''}")
    return split if all(with_masks) else _without_masks(split)


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
