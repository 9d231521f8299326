import numpy as np
import pytest

from kerasseg import data
from kerasseg.data import shapes


def test_same_seed_same_pixels_and_splits_differ():
    a_images, a_masks = shapes.load("train", 48, 40, count=6, seed=3)
    b_images, b_masks = shapes.load("train", 48, 40, count=6, seed=3)
    np.testing.assert_array_equal(a_images, b_images)
    np.testing.assert_array_equal(a_masks, b_masks)
    other_seed, _ = shapes.load("train", 48, 40, count=6, seed=4)
    val, _ = shapes.load("val", 48, 40, count=6, seed=3)
    assert not np.array_equal(a_images, other_seed)
    assert not np.array_equal(a_images, val)
    # an index means the same sample whatever else is loaded
    np.testing.assert_array_equal(shapes.sample(3, "train", 5, 48, 40)[0], a_images[5])


@pytest.mark.parametrize("spec", ["shapes", "shapes:hard"])
@pytest.mark.parametrize("size", [(64, 64), (97, 131), (20, 300)])
def test_any_size_labels_in_range(size, spec):
    split = data.load_split(spec, "val", size, count=20)
    assert split.images.shape == (20, *size, 3) and split.images.dtype == np.uint8
    assert split.masks.shape == (20, *size) and split.masks.dtype == np.uint8
    assert split.masks.max() < split.num_classes
    assert split.num_classes >= 4 and split.class_names[0] == "background"


@pytest.mark.parametrize("spec", ["shapes", "shapes:hard"])
def test_every_class_present_and_mixed_in_images(spec):
    split = data.load_split(spec, "train", (64, 64), count=100)
    counts = np.bincount(split.masks.ravel(), minlength=split.num_classes)
    assert (counts > 0).all()
    classes_per_image = [len(np.unique(m)) for m in split.masks]
    assert max(classes_per_image) >= min(split.num_classes, 6)


@pytest.mark.parametrize("spec", ["shapes", "shapes:hard"])
def test_colour_does_not_solve_it(spec):
    """A per-pixel colour classifier (nearest class mean colour) fails on the shape classes."""
    train = data.load_split(spec, "train", (64, 64), count=200)
    test = data.load_split(spec, "test", (64, 64), count=100)
    foreground = range(1, train.num_classes)
    means = np.stack([train.images[train.masks == c].mean(0) for c in foreground])
    pixels = test.images[test.masks > 0].astype(np.float64)
    labels = test.masks[test.masks > 0]
    predicted = np.argmin(((pixels[:, None, :] - means[None]) ** 2).sum(-1), axis=1) + 1
    accuracy = (predicted == labels).mean()
    chance = np.bincount(labels).max() / len(labels)
    assert accuracy < chance + 0.1, (accuracy, chance)


def test_unknown_spec_lists_accepted():
    with pytest.raises(ValueError, match="accepted: shapes"):
        data.load_split("cityscapes", "train", (32, 32))


def test_the_hard_variant_is_a_pure_function_with_more_classes_thin_objects_and_no_colour_contrast():
    np.testing.assert_array_equal(shapes.hard_sample(0, "test", 7, 50, 70)[0],
                                  shapes.hard_sample(0, "test", 7, 50, 70)[0])
    assert not np.array_equal(shapes.hard_sample(0, "test", 7, 50, 70)[0], shapes.sample(0, "test", 7, 50, 70)[0])
    split = data.load_split("shapes:hard", "train", (96, 96), count=60)
    assert split.class_names == shapes.HARD_CLASS_NAMES and split.num_classes == 9
    assert np.mean([len(np.unique(m)) - 1 for m in split.masks]) >= 3  # several shapes in every image
    bar = shapes.HARD_CLASS_NAMES.index("bar")
    widths = [(m == bar).sum() / max(1, np.ptp(np.argwhere(m == bar), axis=0).max()) for m in split.masks
              if (m == bar).sum() > 20]
    assert widths and np.median(widths) < 3  # bars are strokes a pixel or two wide
