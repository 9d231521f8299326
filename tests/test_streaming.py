"""The user's whole dataset streamed from its files: the same pixels as the reader gives, every bad file named
before the first step by a scan far cheaper than decoding (recorded in the run), a file damaged where the
scan cannot see stopping the run at a resumable point, and the caches of decoded examples."""

import os
import struct
import threading
import zlib

import numpy as np
import pytest
from PIL import Image

from awkward_folders import write_awkward_folder
from conftest import run_main
from helpers import NOT_ON_JAX
from kerasseg import data
from kerasseg.data import pipeline
from kerasseg.data.scan import Scan, image_size, scan
from kerasseg.data.reading import DatasetError, read_example, read_image, read_mask


@pytest.fixture(scope="module")
def awkward(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stream") / "my plots"
    write_awkward_folder(folder, count=24)
    return folder


def _examples(folder, split="train"):
    return data.list_examples(f"folder:{folder}", split)


def test_streaming_gives_the_readers_pixels_for_every_awkward_file(awkward):
    examples, names = _examples(awkward)
    reader = pipeline.ExampleReader(examples, len(names))
    streamed = list(pipeline.decoded(reader).as_numpy_iterator())
    assert len(streamed) == len(examples)
    for example, (image, mask) in zip(examples, streamed):
        np.testing.assert_array_equal(image, read_image(example.image), err_msg=example.image)
        np.testing.assert_array_equal(mask, read_mask(example.mask), err_msg=example.mask)
    # evaluation batches: exactly the images and masks resized as the in-memory path resizes them
    split = data.to_split(data.read_examples(examples, len(names)), names, (32, 40))
    batches = list(pipeline.make_dataset(reader, (32, 40), 5).as_numpy_iterator())
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), split.images.astype(np.float32))
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), split.masks)


def test_the_scan_sizes_every_awkward_file_as_the_reader_does_without_decoding_its_image(awkward):
    examples, names = _examples(awkward)
    result = scan(examples, len(names))
    for example in examples:
        assert result.size(example) == read_image(example.image).shape[:2], example.image
    assert result.decoded_bytes(examples) == sum(4 * read_image(e.image)[..., 0].size for e in examples)


def _png_with_exif_after_its_pixels(path, picture, orientation):
    """A PNG whose eXIf chunk (orientation) comes after IDAT, where Pillow finds it only when decoding."""
    Image.fromarray(picture).save(path)
    content = path.read_bytes()
    exif = Image.Exif()
    exif[0x0112] = orientation
    payload = exif.tobytes()
    payload = payload[6:] if payload.startswith(b"Exif\x00\x00") else payload
    chunk = struct.pack(">I", len(payload)) + b"eXIf" + payload + struct.pack(">I", zlib.crc32(b"eXIf" + payload))
    end = content.rindex(b"IEND") - 4
    path.write_bytes(content[:end] + chunk + content[end:])


def test_the_scan_reads_orientation_and_whole_files_as_the_decoder_does(tmp_path):
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 255, (20, 36, 3), np.uint8)
    late = tmp_path / "late exif.png"
    _png_with_exif_after_its_pixels(late, picture, 6)
    assert read_image(str(late)).shape[:2] == (36, 20)  # a viewer shows it turned
    assert image_size(str(late)) == (36, 20)
    early = tmp_path / "early.png"
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.fromarray(picture).save(early, exif=exif)
    assert image_size(str(early)) == read_image(str(early)).shape[:2] == (36, 20)
    trailing = tmp_path / "camera.jpg"  # bytes after the end-of-image marker: a whole file all the same
    Image.fromarray(picture).save(trailing, quality=90)
    trailing.write_bytes(trailing.read_bytes() + b"\x00" * 64)
    assert image_size(str(trailing)) == (20, 36)
    for name in ("cut.jpg", "cut.png"):
        whole = tmp_path / f"whole{os.path.splitext(name)[1]}"
        Image.fromarray(picture).save(whole)
        (tmp_path / name).write_bytes(whole.read_bytes()[:-40])
        with pytest.raises(DatasetError, match=rf"{name}: unreadable or truncated image"):
            image_size(str(tmp_path / name))


def _damage_inside(path):
    """Flips bytes in the middle of a PNG's pixel data: every chunk still in place up to IEND, so the scan
    passes it, but it does not decode."""
    content = bytearray(path.read_bytes())
    start = content.index(b"IDAT") + 4
    for i in range(start + 10, start + 30):
        content[i] ^= 0xFF
    path.write_bytes(bytes(content))


def _folder(root, count=12, size=(40, 48)):
    """A folder: of PNG images (shapes samples) and masks, its splits fixed: two thirds training (8 of 12), the
    rest validation."""
    split = data.load_split("shapes", "train", size, count=count)
    for sub in ("images", "masks", "splits"):
        (root / sub).mkdir(parents=True)
    for i, (image, mask) in enumerate(zip(split.images, split.masks)):
        Image.fromarray(image).save(root / "images" / f"frame {i:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"frame {i:02d}.png")
    (root / "labels.txt").write_text("\n".join(split.class_names) + "\n")
    cut = 2 * count // 3
    (root / "splits" / "train.txt").write_text("".join(f"frame {i:02d}\n" for i in range(cut)))
    (root / "splits" / "val.txt").write_text("".join(f"frame {i:02d}\n" for i in range(cut, count)))
    return root


@pytest.mark.large
def test_a_file_damaged_inside_stops_at_the_last_complete_epoch_and_resume_continues(tmp_path, capsys):
    from kerasseg import train

    folder = _folder(tmp_path / "ds")
    damaged = folder / "images" / "frame 03.png"
    original = damaged.read_bytes()
    _damage_inside(damaged)
    scan(_examples(folder)[0], 4)  # the scan cannot see it: its structure is whole
    with pytest.raises(DatasetError, match="frame 03.png"):
        read_image(str(damaged))
    damaged.write_bytes(original)
    out = tmp_path / "run"
    common = ["--model", "unet_tiny", "--image-size", "32", "--batch-size", "4", "--cache", "none"]
    assert run_main(train.main, "--dataset", f"folder:{folder}", *common, "--epochs", "1", "--output", out) == 0
    _damage_inside(damaged)  # after the first epoch: met while the second is read
    capsys.readouterr()
    assert run_main(train.main, "--output", out, "--resume", "--epochs", "3") == 2
    stderr = capsys.readouterr().err
    lines = [line for line in stderr.splitlines() if "error" in line]
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    assert "frame 03.png: unreadable or truncated image" in lines[0]
    assert "epoch 1 of 3 is complete" in lines[0] and "--resume" in lines[0]
    assert len((out / "history.csv").read_text().splitlines()) == 2  # the complete epoch, kept
    damaged.write_bytes(original)
    assert run_main(train.main, "--output", out, "--resume", "--epochs", "3") == 0, capsys.readouterr().err
    rows = (out / "history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["0", "1", "2"]


def test_every_bad_file_of_both_splits_is_named_before_training(tmp_path, capsys):
    from kerasseg import train

    folder = _folder(tmp_path / "ds")
    cut = folder / "images" / "frame 01.png"
    cut.write_bytes(cut.read_bytes()[:-30])  # training split
    mask = np.asarray(Image.open(folder / "masks" / "frame 09.png")).copy()
    mask[0, 0] = 7
    Image.fromarray(mask).save(folder / "masks" / "frame 09.png")  # validation split
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(folder / "masks" / "frame 10.png")
    code = run_main(train.main, "--dataset", f"folder:{folder}", "--model", "unet_tiny", "--image-size", "32",
                    "--epochs", "1", "--output", tmp_path / "out")
    stderr = capsys.readouterr().err
    assert code == 2 and "Traceback" not in stderr
    assert "3 problem(s)" in stderr
    assert "frame 01.png: unreadable or truncated image" in stderr
    assert "frame 09.png: mask values [7]" in stderr and "frame 10.png is 10x10" in stderr
    assert not (tmp_path / "out").exists()


def test_the_run_records_its_scan_and_later_stages_check_only_what_changed(tmp_path, capsys):
    from kerasseg import resolve, train

    folder = _folder(tmp_path / "ds")
    run = train.train(train.TrainConfig(tmp_path / "run", model="unet_tiny", dataset=f"folder:{folder}",
                                        image_size=32, epochs=1, batch_size=4))
    recorded = Scan.load(run.directory)
    assert len(recorded.entries) == 12
    view = resolve.data_view(run.model_path)
    examples, names = view.list_examples("val")
    assert view.scan(examples, len(names)).checked == 0  # evaluate: nothing scanned again
    os.utime(folder / "masks" / "frame 09.png", ns=(1, 1))
    assert view.scan(examples, len(names)).checked == 1
    capsys.readouterr()
    train.train(train.TrainConfig.resumed(run.directory, epochs=2))
    assert "1 of 12 examples changed since" in capsys.readouterr().out
    assert run.metrics["time_to_first_step"] > 0 and run.metrics["cache"] == "memory"


def test_a_disk_cache_keeps_the_decoded_pixels_and_is_used_instead_of_the_file(tmp_path):
    folder = _folder(tmp_path / "ds")
    examples, names = _examples(folder)
    cache, note = pipeline.open_cache(str(tmp_path / "cache"), examples, 0)
    assert "decoded once and kept there" in note
    first = list(pipeline.decoded(pipeline.ExampleReader(examples, len(names), cache)).as_numpy_iterator())
    assert len(list((tmp_path / "cache").glob("*.npy"))) == len(examples)
    # a file damaged behind the cache's back (same size, same time): read from the cache, not the file
    damaged = folder / "images" / "frame 03.png"
    stat = damaged.stat()
    _damage_inside(damaged)
    os.utime(damaged, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = list(pipeline.decoded(pipeline.ExampleReader(examples, len(names), cache)).as_numpy_iterator())
    for (image, mask), (cached_image, cached_mask) in zip(first, again):
        np.testing.assert_array_equal(image, cached_image)
        np.testing.assert_array_equal(mask, cached_mask)
    without = pipeline.ExampleReader(examples, len(names))
    with pytest.raises(DatasetError, match="frame 03.png"), pipeline.failures(without):
        list(pipeline.decoded(without).as_numpy_iterator())
    # an edited file (another modification time) is decoded again
    os.utime(damaged, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    edited = pipeline.ExampleReader(examples, len(names), cache)
    with pytest.raises(DatasetError, match="frame 03.png"), pipeline.failures(edited):
        list(pipeline.decoded(edited).as_numpy_iterator())


def test_two_writers_of_one_disk_cache_never_leave_a_torn_file(tmp_path):
    folder = _folder(tmp_path / "ds", count=4)
    examples, _ = _examples(folder)
    caches = [pipeline.DiskCache(tmp_path / "cache") for _ in range(2)]
    pairs = [read_example(e) for e in examples]
    seen, stop = [], threading.Event()

    def write(cache):
        for _ in range(20):
            for example, pair in zip(examples, pairs):
                cache.put(example, pair)
        stop.set()

    writers = [threading.Thread(target=write, args=(c,)) for c in caches]
    for thread in writers:
        thread.start()
    while not stop.is_set():
        seen += [(i, caches[0].get(e)) for i, e in enumerate(examples)]
    for thread in writers:
        thread.join()
    for i, pair in seen:
        if pair is not None:  # (not written yet) or whole
            np.testing.assert_array_equal(pair[0], pairs[i][0])
            np.testing.assert_array_equal(pair[1], pairs[i][1])
    assert not [p for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".npy")]


def test_cache_choice_is_said_with_its_reason(tmp_path):
    folder = _folder(tmp_path / "ds", count=4)
    examples, _ = _examples(folder)
    assert isinstance(pipeline.open_cache("auto", examples, 2**20)[0], pipeline.MemoryCache)
    cache, note = pipeline.open_cache("auto", examples, 3 * 2**30)
    assert cache is None and "3.00 GiB decoded, more than 1 GiB" in note
    assert pipeline.open_cache("none", examples, 0)[0] is None
    (tmp_path / "a file").write_text("")
    with pytest.raises(ValueError, match="a file"):
        pipeline.open_cache(str(tmp_path / "a file" / "cache"), examples, 0)
    from kerasseg.train import ConfigError, TrainConfig

    with pytest.raises(ConfigError, match="cache=''"):
        TrainConfig(tmp_path / "r", cache="")
    assert TrainConfig(tmp_path / "r", cache="~/c").cache == os.path.expanduser("~/c")


def test_a_cache_that_cannot_be_written_says_so_once_and_reading_goes_on(tmp_path):
    """A full disk under the cache (a file size limit: every write past it fails with EFBIG): one note, no
    torn file, and the examples still read, from their files."""
    import subprocess
    import sys

    from conftest import ROOT

    folder = _folder(tmp_path / "ds", count=6)
    script = f"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from kerasseg import data
from kerasseg.data import pipeline
examples, names = data.list_examples({f"folder:{folder}"!r}, "train")
cache = pipeline.DiskCache({str(tmp_path / "cache")!r})
resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))
pairs = list(pipeline.decoded(pipeline.ExampleReader(examples, len(names), cache)).as_numpy_iterator())
print(len(pairs), cache.writable)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": ROOT}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["4", "False"]
    assert result.stderr.count("note: the cache stops") == 1 and "File too large" in result.stderr
    assert list((tmp_path / "cache").iterdir()) == []  # no file left half-written


def test_a_bad_file_met_in_training_prints_no_traceback_from_the_pipeline(tmp_path):
    """TensorFlow logs a failing pipeline function's error with the Python traceback it carries (the user saw
    two before the one line); the reader puts an ignored pixel in its place instead, and the run stops at the
    next step without committing the epoch."""
    from conftest import run_cli

    folder = _folder(tmp_path / "ds")
    _damage_inside(folder / "images" / "frame 02.png")
    result = run_cli("kerasseg.train", "--dataset", f"folder:{folder}", "--model", "unet_tiny", "--image-size", "32",
                     "--epochs", "2", "--batch-size", "4", "--cache", "none", "--output", tmp_path / "run",
                     env={"TF_CPP_MIN_LOG_LEVEL": "0"})  # (every log TensorFlow writes, as a user's terminal shows)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "PyFunc" not in result.stderr, result.stderr[-3000:]
    assert "frame 02.png: unreadable or truncated image" in result.stderr
    assert "no epoch had completed" in result.stderr and not (tmp_path / "run" / "history.csv").exists()


def test_a_mistyped_cache_is_refused_not_made_a_folder(tmp_path, monkeypatch):
    from kerasseg.train import ConfigError, TrainConfig

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"cache='memry' is not one of auto, none, memory \(did you mean memory\?\)"):
        TrainConfig(tmp_path / "r", cache="memry")
    assert not (tmp_path / "memry").exists()
    assert TrainConfig(tmp_path / "r", cache="./memry").cache == str(tmp_path / "memry")


def _more_kinds(folder):
    """Files the awkward folder lacks that TensorFlow's decoders take: upright JPEGs (4:2:0 and 4:4:4 chroma,
    progressive, grayscale, Orientation 1 stated), a PNG with a transparent colour, odd sizes."""
    rng = np.random.default_rng(3)
    stems = []
    for i, (kind, size) in enumerate([("420", (61, 83)), ("444", (50, 38)), ("progressive", (45, 97)),
                                      ("gray", (57, 40)), ("orientation1", (40, 66)), ("trns", (39, 51))]):
        h, w = size
        picture = np.clip(rng.normal(128, 50, (h // 8 + 2, w // 8 + 2, 3)), 0, 255).astype(np.uint8)
        picture = np.asarray(Image.fromarray(picture).resize((w, h), Image.BILINEAR))
        stem = f"more {kind} {i}"
        if kind == "gray":
            Image.fromarray(picture[..., 0]).save(folder / "images" / f"{stem}.jpg", quality=90)
        elif kind == "trns":
            Image.fromarray(picture).save(folder / "images" / f"{stem}.png", transparency=(10, 20, 30))
        else:
            exif = Image.Exif()
            exif[0x0112] = 1
            Image.fromarray(picture).save(folder / "images" / f"{stem}.jpg", quality=85,
                                          subsampling=2 if kind != "444" else 0, progressive=kind == "progressive",
                                          exif=exif.tobytes() if kind == "orientation1" else b"")
        Image.fromarray(rng.integers(0, 3, size).astype(np.uint8), "L").save(folder / "masks" / f"{stem}.png")
        stems.append(stem)
    return stems


def test_the_files_tensorflow_decodes_give_the_readers_pixels_whole_and_in_every_crop(tmp_path):
    """Crop first, out of the GIL: the scan sends to TensorFlow's decoders only the files they read as the reader
    does (every other awkward file stays with the reader), and a crop decoded from its file's window equals the
    reader's whole picture resized then cropped, at every scale down to the JPEG DCT's 1/2."""
    import tensorflow as tf

    from kerasseg.data import crops

    folder = tmp_path / "mixed"
    write_awkward_folder(folder, count=24)
    _more_kinds(folder)
    examples, names = _examples(folder)
    scanned = scan(examples, len(names))
    codecs = {os.path.basename(e.image): scanned.codecs(e)[0] for e in examples}
    assert {n for n, c in codecs.items() if c == 1} >= {n for n in codecs if n.startswith("more") and "trns" not in n}
    for name in codecs:  # rotated, 16-bit, palette, CMYK, TIFF, BMP, transparent: the reader's
        if any(k in name for k in ("IMG_", "été", "plot.v2", "田んぼ", ".tif", "scan_", ".bmp", "thermal", "trns")):
            assert codecs[name] is None, name
    fast = [e for e in examples if scanned.codecs(e)[0] is not None]
    assert len(fast) >= 8 and any(scanned.codecs(e)[0] == 0 for e in fast)
    reader = pipeline.ExampleReader(examples, len(names))
    for example, (image, mask) in zip(examples, pipeline.decoded(reader, scan=scanned).as_numpy_iterator()):
        np.testing.assert_array_equal(image, read_image(example.image), err_msg=example.image)
        np.testing.assert_array_equal(mask, read_mask(example.mask), err_msg=example.mask)
    size = (24, 20)
    for example in fast:
        image, mask = read_image(example.image), read_mask(example.mask).astype(np.int32)
        height, width = image.shape[:2]
        cover = max(size[0] / height, size[1] / width)
        for scale, at in [(1.0, (0, 0)), (1.37, (1.0, 1.0)), (0.75, (0.5, 0.3)), (0.45, (0.2, 0.9))]:
            scaled = (int(np.ceil(height * cover * 2 * scale)), int(np.ceil(width * cover * 2 * scale)))
            offset = tf.constant([int(at[0] * max(scaled[0] - size[0], 0)), int(at[1] * max(scaled[1] - size[1], 0))])
            expected = tf.image.resize(image.astype(np.float32), scaled).numpy()
            expected = expected[offset[0]:offset[0] + size[0], offset[1]:offset[1] + size[1]]
            expected_mask = tf.image.resize(mask[..., None], scaled, "nearest").numpy()[..., 0]
            expected_mask = expected_mask[offset[0]:offset[0] + size[0], offset[1]:offset[1] + size[1]]
            pixels, box, ratio = crops.decode_window(example.image, scanned.codecs(example)[0], height, width,
                                                     tf.constant(scaled), offset, size)
            crop = crops.sample(pixels, box, ratio, height, width, tf.constant(scaled), offset, size).numpy()
            where = (slice(0, expected.shape[0]), slice(0, expected.shape[1]))
            message = f"{example.image} at {scaled} from {offset.numpy()}, ratio {int(ratio)}"
            if int(ratio) == 1:  # the same pixels
                np.testing.assert_allclose(crop[where], expected, atol=1e-3, err_msg=message)
            else:  # libjpeg's DCT downscale: antialiased, unlike the bilinear resize, so close on a smooth picture
                whole = tf.io.decode_jpeg(tf.io.read_file(example.image), 3, ratio=int(ratio),
                                          dct_method=crops.JPEG)  # (decoded whole: the window adds nothing)
                from_whole = crops.sample(whole, tf.zeros(4, tf.int32), ratio, height, width, tf.constant(scaled),
                                          offset, size).numpy()
                np.testing.assert_allclose(crop, from_whole, atol=1e-3, err_msg=message)
                assert np.abs(crop[where] - expected).mean() < 3.0, message
            mask_crop = crops.sample_mask(tf.constant(mask), (0, 0), height, width, tf.constant(scaled), offset,
                                          size).numpy()
            np.testing.assert_array_equal(mask_crop[where], expected_mask, err_msg=message)


def test_kerasseg_data_dataset_gives_the_runs_pixels_and_model_fit_learns_from_it(tmp_path):
    """The public streaming dataset over a folder of awkward files and JPEGs TensorFlow decodes: evaluation
    batches are the pixels load_split gives, and model.fit (on this process's backend: make test runs it on
    TensorFlow and JAX) learns from its augmented crops."""
    import keras

    from kerasseg import losses, models

    folder = tmp_path / "plots"
    write_awkward_folder(folder, count=36)
    _more_kinds(folder)
    spec = f"folder:{folder}"
    stream = data.dataset(spec, "train", (32, 40), batch_size=5)
    batches = list(stream.as_numpy_iterator())
    split = data.load_split(spec, "train", (32, 40))
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), split.images.astype(np.float32))
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), split.masks)
    keras.utils.set_random_seed(1)
    model = models.unet_tiny(classes=len(data.class_names(spec)), base_filters=8)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=losses.SegmentationLoss("ce"))
    model.optimizer.build(model.trainable_variables)  # (the first step traced once: see kerasseg/training/_fitting.py)
    history = model.fit(data.dataset(spec, "train", 32, batch_size=8, augment="full", seed=4), epochs=6, verbose=0)
    losses_seen = history.history["loss"]
    assert len(losses_seen) == 6 and losses_seen[-1] < 0.7 * losses_seen[0], losses_seen
    with pytest.raises(ValueError, match="augment must be None, 'flip' or 'full'. Received: 'ful'"):
        data.dataset(spec, augment="ful")


_PEAK = """
import resource, sys
import numpy as np
from kerasseg import data
def peak(count):
    for _ in data.dataset(sys.argv[1], "train", 64, batch_size=8, augment="full", count=count):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
small = peak(40)
print(small, peak(None))
"""


@NOT_ON_JAX  # (the pipeline is TensorFlow's on either backend)
def test_kerasseg_data_dataset_streams_in_memory_flat_in_the_datasets_size(tmp_path):
    """An epoch over 400 photos of 384x768 (450 MiB decoded) peaks where an epoch over 40 of them does."""
    import subprocess
    import sys

    from conftest import ROOT

    folder = tmp_path / "photos"
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    base = np.clip(rng.normal(120, 60, (48, 96, 3)), 0, 255).astype(np.uint8)
    for i in range(400):
        size = (768, 384) if i % 5 else (384, 768)  # mixed orientations
        Image.fromarray(np.roll(base, i, axis=1)).resize(size).save(folder / "images" / f"photo {i}.jpg", quality=80)
        Image.fromarray((np.arange(size[0] * size[1]) % 3).astype(np.uint8).reshape(size[::-1])).save(
            folder / "masks" / f"photo {i}.png")
    result = subprocess.run([sys.executable, "-c", _PEAK, f"folder:{folder}"], capture_output=True, text=True,
                            timeout=600, env={**os.environ, "PYTHONPATH": ROOT}, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    small, large = map(float, result.stdout.split()[-2:])
    assert large - small < 150, (small, large)  # MiB; holding the decoded photos would add 450
