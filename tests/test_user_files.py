"""Files as a user's own folder holds them (tests/data/awkward_folders.py): read as a viewer shows them, any
file name kept exactly through every list a run writes, the same folder however it is spelled, and what
cannot be one example per stem refused by name. In-process and fast; the trained run on such a folder is
tests/test_user_data.py's."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from awkward_folders import CLASSES, KINDS, png16, spellings, write_awkward_folder
from conftest import ROOT
from kerasseg import data, resolve
from kerasseg.training import rundir
from kerasseg.data.sources import DatasetError, read_image, read_mask

# how far a decoded image may be from the picture it was made from: lossless formats exactly; JPEG's noise
# (the picture is itself noisy), a 64-colour palette and CMYK's round trip a few levels; grayscale its luma
TOLERANCE = {"png": 0, "rgb16": 0, "tiff": 0, "rgba": 0, "bmp": 0, "exif3": 12, "exif6": 12, "exif8": 12,
             "palette": 8, "cmyk": 4}


@pytest.fixture(scope="module")
def awkward(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user") / "my plots"
    return folder, write_awkward_folder(folder)


def test_every_kind_of_image_reads_as_a_viewer_shows_it_and_fits_its_mask(awkward):
    folder, written = awkward
    for index, (stem, (name, picture)) in enumerate(written.items()):
        kind = KINDS[index % len(KINDS)][1]
        image = read_image(str(folder / "images" / name))
        mask = read_mask(str(folder / "masks" / f"{stem}.png"))
        assert image.dtype == np.uint8 and image.shape == picture.shape and image.shape[:2] == mask.shape, name
        if kind in ("la", "gray16"):
            expected = np.asarray(Image.fromarray(picture).convert("L"))
            assert np.abs(image[..., 0].astype(int) - expected).max() == 0, name
            continue
        # the old reader left the EXIF-rotated JPEGs sideways: 24 to 31 levels off, or of the wrong shape
        assert np.abs(image.astype(int) - picture).mean() <= TOLERANCE[kind], name


def test_16_bit_images_keep_their_high_byte_and_are_never_clipped(tmp_path):
    # 12-bit data in a 16-bit grayscale PNG, as a microscope or a thermal camera writes it
    values = (1520 + np.arange(24 * 32).reshape(24, 32) * 1072 // (24 * 32 - 1)).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "gray12.png")
    image = read_image(str(tmp_path / "gray12.png"))  # the old reader: 255 everywhere
    np.testing.assert_array_equal(image, np.repeat((values >> 8).astype(np.uint8)[..., None], 3, -1))
    assert image.min() == 5 and image.max() == 10  # as dark as a viewer shows it, every level distinct
    colour = np.random.default_rng(0).integers(0, 65536, (8, 8, 3)).astype(np.uint16)
    png16(tmp_path / "rgb16.png", colour)
    np.testing.assert_array_equal(read_image(str(tmp_path / "rgb16.png")), colour >> 8)


def test_an_image_of_floats_is_refused_saying_how_to_convert_it(tmp_path):
    Image.fromarray(np.random.default_rng(0).random((8, 8), np.float32)).save(tmp_path / "depth.tif")
    with pytest.raises(DatasetError, match=r"depth\.tif: 32-bit float pixels .* save it with 8 or 16 bits"):
        read_image(str(tmp_path / "depth.tif"))


def test_a_sideways_mask_is_turned_upright_as_its_image_is(tmp_path):
    upright = np.zeros((20, 30), np.uint8)
    upright[:5, :10] = 1
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1))).save(tmp_path / "m.png", exif=exif)
    np.testing.assert_array_equal(read_mask(str(tmp_path / "m.png")), upright)


def test_the_folder_lists_every_name_and_reads_windows_labels(awkward):
    folder, written = awkward
    source = data.open_source(f"folder:{folder}")
    assert sorted(source.pairs) == sorted(written)  # spaces, dots, '#', brackets, non-ASCII, a trailing blank
    assert source.class_names == CLASSES  # labels.txt with a byte-order mark and CRLF
    (folder / "images" / "._IMG_0001.JPG").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # copied from a Mac
    (folder / "images" / ".DS_Store").write_bytes(b"\x00")
    try:
        assert sorted(data.open_source(f"folder:{folder}").pairs) == sorted(written)  # hidden files skipped
    finally:
        os.remove(folder / "images" / "._IMG_0001.JPG")
        os.remove(folder / "images" / ".DS_Store")


def test_two_images_with_one_stem_are_refused_by_name(tmp_path):
    folder = tmp_path / "plots"
    write_awkward_folder(folder, count=4)
    os.link(folder / "images" / "field plot 00.png", folder / "images" / "field plot 00.jpg")
    with pytest.raises(DatasetError, match=r"field plot 00\.jpg and .*field plot 00\.png share the stem"):
        data.open_source(f"folder:{folder}")  # the old code dropped one of them silently


def test_duplicate_class_names_are_refused_by_name(tmp_path):
    folder = tmp_path / "plots"
    write_awkward_folder(folder, count=4)
    (folder / "labels.txt").write_text("plant\nplant\nstone\n")
    with pytest.raises(DatasetError, match=r"names 'plant' more than once.*line 1 and 2"):
        data.open_source(f"folder:{folder}")  # the old code gave per_class_iou 2 keys for 3 classes


def test_a_runs_split_lists_keep_every_file_name_exactly(awkward, tmp_path):
    _, written = awkward
    keys = sorted(written) + ["  leading blanks", "trailing blank "]
    run = rundir.RunDir(tmp_path / "run")
    run.write_record({"dataset": "shapes", "image_size": [32, 32]}, CLASSES, {"train": keys, "val": keys[:2]})
    record = rundir.Run.read(tmp_path / "run")
    assert record.split_keys("train") == keys and record.split_keys("val") == keys[:2]  # old: str.split()
    with pytest.raises(ValueError, match="line break"):
        run.write_record({}, CLASSES, {"train": ["two\nlines"]})


def test_a_dataset_is_named_by_its_location_whatever_the_spelling(awkward, tmp_path):
    folder, _ = awkward
    run = tmp_path / "run"
    rundir.RunDir(run).write_record({"dataset": f"folder:{folder}", "image_size": [32, 32]}, CLASSES,
                                    {"val": ["field plot 00"]})
    for spelling in spellings(folder, ROOT):
        assert data.same_dataset(f"folder:{spelling}", f"folder:{folder}"), spelling
        view = resolve.data_view(run / "model.keras", f"folder:{spelling}")
        # the run's own split lists follow the data (the old code scored on training images here)
        assert view.record is not None and view.spec == f"folder:{os.path.realpath(folder)}", spelling
    assert resolve.data_view(run / "model.keras", "shapes").record is None


def test_a_folders_own_split_lists_may_hold_names_with_blanks(tmp_path):
    folder = tmp_path / "plots"
    written = write_awkward_folder(folder, count=11)
    stems = sorted(written)
    (folder / "splits").mkdir()
    (folder / "splits" / "train.txt").write_text("\r\n".join(stems[:8]) + "\r\n")  # CRLF, names with blanks
    (folder / "splits" / "val.txt").write_text("\n".join(f"{s}" for s in stems[8:]))
    source = data.open_source(f"folder:{folder}")
    assert source.splits["train"] == stems[:8] and source.splits["val"] == stems[8:]
    assert json.loads(json.dumps(source.splits)) == source.splits
