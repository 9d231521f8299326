"""Datasets on disk and in TFDS, the augmenting pipeline, the losses, and training runs (resume, NaN,
distribution strategies) through the real command lines."""

import csv
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import keras

from conftest import ROOT, run_cli, run_main
from kerasseg import data, losses
from kerasseg.data.pipeline import make_dataset

CLASSES = ("background", "disc", "square", "triangle")


def _write_folder(root, count=12, sizes=((40, 56), (48, 48), (36, 60)), palette=True, labels=True):
    """A folder: dataset from shapes samples of several sizes (palette masks, mixed image formats)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(count):
        h, w = sizes[i % len(sizes)]
        image, mask = data.load_split("shapes", "train", (h, w), count=i + 1).images[i], \
            data.load_split("shapes", "train", (h, w), count=i + 1).masks[i]
        Image.fromarray(image).save(root / "images" / f"img{i:02d}.{('png', 'jpg', 'bmp')[i % 3]}")
        m = Image.fromarray(mask, mode="P" if palette else "L")
        if palette:  # colours unrelated to the indices: the indices must be read, not the colours
            m.putpalette([200, 10, 10, 10, 200, 10, 10, 10, 200, 90, 90, 90] + [0] * 756)
        m.save(root / "masks" / f"img{i:02d}.png")
    if labels:
        (root / "labels.txt").write_text("\n".join(CLASSES) + "\n")
    return root


def _write_voc(root, count=6):
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    split = data.load_split("shapes", "train", (40, 52), count=count)
    for i, (image, mask) in enumerate(zip(split.images, split.masks)):
        Image.fromarray(image).save(root / "JPEGImages" / f"2007_{i:06d}.jpg")
        mask = mask.copy()
        mask[0, :] = 255  # VOC's object borders: ignored
        m = Image.fromarray(mask, mode="P")
        m.putpalette(list(range(256)) * 3)
        m.save(root / "SegmentationClass" / f"2007_{i:06d}.png")
    (root / "ImageSets/Segmentation/train.txt").write_text("\n".join(f"2007_{i:06d}" for i in range(count - 2)))
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(f"2007_{i:06d}" for i in range(count - 2, count)))
    return root


def test_native_size_evaluation_scores_every_image_at_its_own_size(tmp_path):
    from kerasseg import metrics, models
    from kerasseg.metrics import evaluate_pairs

    pairs, names = data.load_examples(f"folder:{_write_folder(tmp_path / 'ds')}", "train")
    assert len({image.shape for image, _ in pairs}) == 3
    model = models.unet_tiny(classes=4)
    cm = sum(metrics.confusion_matrix(mask, model.predict_on_batch(image[None].astype("float32")).argmax(-1), 4)
             for image, mask in pairs)
    assert evaluate_pairs(model, pairs, names, batch_size=2) == metrics.scores(cm, names)


def test_folder_reads_palette_indices_at_each_images_size(tmp_path):
    root = _write_folder(tmp_path / "ds")
    pairs, names = data.load_examples(f"folder:{root}", "train")
    assert names == CLASSES
    source = data.open_source(f"folder:{root}")
    assert len(source.splits["train"]) + len(source.splits["val"]) == 12  # a seeded 90/10 split
    stem = source.splits["train"][0]
    image, mask = pairs[0]
    original = np.asarray(Image.open(root / "masks" / f"{stem}.png"))
    np.testing.assert_array_equal(mask, original)  # indices, not palette colours
    assert image.shape[:2] == mask.shape and mask.max() < 4


@pytest.mark.parametrize("breakage, message", [
    ("mask_value", "mask values [7] are not classes 0..3"),
    ("size", "but its mask"),
    ("truncated", "unreadable or truncated image"),
    ("no_mask", "2 image(s) without a mask"),
    ("labels", "--classes 5 disagrees with"),
    ("empty", "has an empty val split"),
])
def test_bad_datasets_are_named_exit_2(tmp_path, breakage, message, capsys):
    from kerasseg import train

    root = _write_folder(tmp_path / "ds", count=6, palette=False)
    extra = []
    if breakage == "mask_value":
        mask = np.asarray(Image.open(root / "masks" / "img01.png")).copy()
        mask[0, 0] = 7
        Image.fromarray(mask).save(root / "masks" / "img01.png")
        message_file = "img01.png"
    elif breakage == "size":
        Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "masks" / "img02.png")
        message_file = "img02"
    elif breakage == "truncated":
        content = (root / "images" / "img00.png").read_bytes()
        (root / "images" / "img00.png").write_bytes(content[: len(content) // 2])
        message_file = "img00.png"
    elif breakage == "no_mask":
        os.remove(root / "masks" / "img03.png")
        os.remove(root / "masks" / "img04.png")
        message_file = "img04"
    elif breakage == "labels":
        extra = ["--classes", "5"]
        message_file = "labels.txt"
    else:
        (root / "splits").mkdir()
        (root / "splits" / "train.txt").write_text("img00\nimg01\n")
        (root / "splits" / "val.txt").write_text("")
        message_file = str(root)
    if breakage in ("mask_value", "size", "truncated"):  # every file is checked, whatever its split
        (root / "splits").mkdir()
        (root / "splits" / "train.txt").write_text("\n".join(f"img{i:02d}" for i in range(4)))
        (root / "splits" / "val.txt").write_text("img04\nimg05\n")
    code = run_main(train.main, "--dataset", f"folder:{root}", "--model", "unet_tiny", "--image-size", "32",
                    "--epochs", "1", "--output", tmp_path / "out", *extra)
    stderr = capsys.readouterr().err
    assert code == 2, stderr
    assert message in stderr and message_file in stderr
    assert "Traceback" not in stderr and not (tmp_path / "out").exists()


def test_folder_and_voc_train_evaluate_and_predict_from_the_cli(tmp_path, capsys):
    from kerasseg import evaluate, predict

    folder = _write_folder(tmp_path / "folder")
    voc = _write_voc(tmp_path / "voc")
    for spec, classes in ((f"folder:{folder}", 4), (f"voc:{voc}", 21)):
        out = tmp_path / spec.split(":")[0]
        result = run_cli("kerasseg.train", "--dataset", spec, "--model", "unet_tiny", "--image-size", "32",
                         "--epochs", "1", "--batch-size", "4", "--loss", "ce+dice", "--output", out / "run")
        assert result.returncode == 0, result.stderr
        report = json.loads((out / "run" / "metrics.json").read_text())
        assert len(report["classes"]) == classes and report["loss"] == "ce+dice"
        for name in ("model.keras", "history.csv", "curves.png", "predictions.png", "run.json"):
            assert (out / "run" / name).is_file(), name
        assert any((out / "run" / "logs").rglob("*tfevents*"))
        assert run_main(evaluate.main, out / "run" / "model.keras", "--dataset", spec, "--output",
                        out / "eval.json") == 0, capsys.readouterr().err
        scores = json.loads((out / "eval.json").read_text())
        assert scores["split"] == "val" and len(scores["per_class_iou"]) == classes
    capsys.readouterr()
    assert run_main(evaluate.main, tmp_path / "folder" / "run" / "model.keras", "--dataset", f"folder:{folder}",
                    "--split", "train", "--image-size", "native", "--output", tmp_path / "n.json") == 0
    assert "3 distinct sizes, from 36 to 48 high and 48 to 60 wide" in capsys.readouterr().out
    assert json.loads((tmp_path / "n.json").read_text())["image_size"] == "native"
    image = next((voc / "JPEGImages").iterdir())
    assert run_main(predict.main, tmp_path / "voc" / "run" / "model.keras", image, "--output",
                    tmp_path / "pred") == 0, capsys.readouterr().err
    mask = Image.open(tmp_path / "pred" / f"{image.stem}_mask.png")
    assert mask.mode == "P" and mask.size == Image.open(image).size
    assert (tmp_path / "pred" / f"{image.stem}_overlay.png").is_file()


def _pets(split, **kwargs):
    """oxford_iiit_pet-like records (trimap values 1..3) for tfds.testing.mock_data."""
    import tensorflow as tf

    count = 12 if "train" in str(split) else 4
    shapes = data.load_split("shapes", "train", (40, 48), count=count)
    trimap = np.where(shapes.masks > 0, 1, 2).astype(np.uint8)
    trimap[:, 0, :] = 3
    return tf.data.Dataset.from_tensor_slices({"image": shapes.images, "segmentation_mask": trimap[..., None],
                                               "label": np.zeros(count, np.int64)})


def test_tfds_oxford_pets_trimap_becomes_classes_and_trains(tmp_path):
    import tensorflow_datasets as tfds

    from kerasseg import train

    with tfds.testing.mock_data(as_dataset_fn=lambda self, split, **kwargs: _pets(split)):
        pairs, names = data.load_examples("tfds:oxford_iiit_pet", "train")
        assert names == ("background", "pet") and len(pairs) == 12
        mask = pairs[0][1]
        assert set(np.unique(mask)) <= {0, 1, 255} and (mask[0] == 255).all()  # the border: ignored
        report = train.train(train.TrainConfig(tmp_path / "run", dataset="tfds:oxford_iiit_pet", model="unet_tiny",
                                               image_size=32, epochs=1, batch_size=4)).metrics
        val, _ = data.load_examples("tfds:oxford_iiit_pet", "val")
    assert report["classes"] == ["background", "pet"]
    # the score is the model's own on the mapped trimaps (border ignored), each at its own size
    from kerasseg import evaluate

    model = keras.saving.load_model(tmp_path / "run" / "model.keras")
    assert report["miou"] == pytest.approx(evaluate.evaluate(model, val).miou, abs=1e-9)


def test_augmentation_moves_image_and_mask_together_and_pads_with_ignore():
    keras.utils.set_random_seed(1)
    # an image whose red channel encodes its own mask: after augmentation they must still agree
    mask = np.random.default_rng(0).integers(0, 4, (30, 50)).repeat(2, 0).repeat(2, 1).astype(np.uint8)
    image = np.stack([mask * 60, np.zeros_like(mask), np.zeros_like(mask)], -1).astype(np.uint8)
    batches = make_dataset([(image, mask)] * 16, (64, 64), 16, augment="full", scale_range=(0.5, 1.0))
    images, masks = next(iter(batches))
    images, masks = images.numpy(), masks.numpy()
    padded = masks == 255
    assert padded.any() and (images[padded] == 0).all()  # padding: black image, ignored mask
    # away from resampled edges, the red channel (brightness-jittered) still ranks the classes as the mask does
    kept = ~padded
    for c in range(3):
        assert images[..., 0][kept & (masks == c)].mean() < images[..., 0][kept & (masks == c + 1)].mean()


def _reference_losses(labels, logits, weights, gamma=2.0):
    valid = labels != 255
    y = np.where(valid, labels, 0)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, y[..., None], -1)[..., 0]
    w = np.asarray(weights)[y] * valid
    ce = (w * nll).sum() / w.sum()
    p = np.exp(-nll)
    focal = (w * nll * (1 - p) ** gamma).sum() / w.sum()
    probs = np.exp(logp) * valid[..., None]
    onehot = np.eye(logits.shape[-1])[y] * valid[..., None]
    dice = 1 - np.mean((2 * (probs * onehot).sum((0, 1, 2)) + 1) / (probs.sum((0, 1, 2)) + onehot.sum((0, 1, 2)) + 1))
    return ce, focal, dice


def test_losses_match_a_numpy_reference_with_class_weights_and_ignore():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, 5, 6, 3)).astype("float32") * 3
    labels = rng.integers(0, 3, (2, 5, 6))
    labels[0, 0, :] = 255
    weights = [1.0, 3.0, 0.5]
    ce, focal, dice = _reference_losses(labels, logits, weights)
    assert float(losses.SegmentationLoss("ce", weights)(labels, logits)) == pytest.approx(ce, rel=1e-5)
    assert float(losses.SegmentationLoss("focal", weights)(labels, logits)) == pytest.approx(focal, rel=1e-5)
    assert float(losses.SegmentationLoss("dice")(labels, logits)) == pytest.approx(dice, rel=1e-5)
    combined = losses.SegmentationLoss("0.5*ce+dice", weights)(labels, logits)
    assert float(combined) == pytest.approx(0.5 * ce + dice, rel=1e-5)
    with pytest.raises(ValueError, match=r"unknown loss 'ce\+tversky'"):
        losses.SegmentationLoss("ce+tversky")


def test_resume_without_a_run_and_a_diverging_loss_are_clear_errors(tmp_path, capsys):
    from kerasseg import train

    assert run_main(train.main, "--output", tmp_path / "nothing", "--resume") == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert run_main(train.main, "--model", "unet_tiny", "--image-size", "32", "--epochs", "2", "--train-samples", "32",
                    "--class-weights", "1,inf,1,1", "--output", tmp_path / "nan") == 1
    stderr = capsys.readouterr().err
    assert "the loss became" in stderr and "at epoch 1, step 1" in stderr
    assert "Traceback" not in stderr


@pytest.mark.large
def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    result = run_cli("kerasseg.train", "--model", "unet_tiny", "--image-size", "32", "--epochs", "1",
                     "--train-samples", "64", "--strategy", "mirrored", "--logical-cpus", "2",
                     "--output", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (report["strategy"], report["replicas"]) == ("mirrored", 2)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


# every image file a process opens, one line each (the test's own sitecustomize: an audit hook on "open")
OPEN_LOG_HOOK = """
import os, sys
_log = os.environ.get("OPEN_LOG")
if _log:
    _fd = os.open(_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    def _hook(event, args):
        if event == "open" and isinstance(args[0], str) and f"{os.sep}images{os.sep}" in args[0]:
            os.write(_fd, (os.path.basename(args[0]) + "\\n").encode("utf-8", "surrogateescape"))
    sys.addaudithook(_hook)
"""


@pytest.mark.large
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_multiworker_trains_two_worker_processes_in_step(tmp_path, backend):
    """Two worker processes on 127.0.0.1: TensorFlow's MultiWorkerMirroredStrategy from TF_CONFIG, or
    keras.distribution over two JAX processes. Synchronous training leaves both with the same trainable weights,
    and each worker decodes only its own share of the training files."""
    folder = tmp_path / "ds"
    split = data.load_split("shapes", "train", (32, 32), count=93)
    for sub in ("images", "masks", "splits"):
        (folder / sub).mkdir(parents=True)
    for i, (image, mask) in enumerate(zip(split.images, split.masks)):
        Image.fromarray(image).save(folder / "images" / f"im {i:02d}.png")
        Image.fromarray(mask).save(folder / "masks" / f"im {i:02d}.png")
    (folder / "labels.txt").write_text("\n".join(CLASSES) + "\n")
    (folder / "splits" / "train.txt").write_text("".join(f"im {i:02d}\n" for i in range(64)))
    (folder / "splits" / "val.txt").write_text("".join(f"im {i:02d}\n" for i in range(64, 93)))  # 29: 15 and 14
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(OPEN_LOG_HOOK)
    ports = _free_ports(2)
    processes = []
    for index in range(2):
        if backend == "tensorflow":
            cluster = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker",
                                                                                        "index": index}}
            variables = {"TF_CONFIG": json.dumps(cluster)}
        else:
            variables = {"KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{ports[0]}",
                         "KERAS_DISTRIBUTION_NUM_PROCESSES": "2", "KERAS_DISTRIBUTION_PROCESS_ID": str(index)}
        env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'hook'}{os.pathsep}{ROOT}", "KERAS_BACKEND": backend,
               "OPEN_LOG": str(tmp_path / f"opened-{index}.txt"), **variables}
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "kerasseg.train", "--model", "unet_tiny", "--image-size", "32", "--epochs", "1",
             "--dataset", f"folder:{folder}", "--strategy", "multiworker", "--output", str(tmp_path / "run"),
             # no batch norm: no per-worker statistics, so both workers' models are one model
             "--model-args", '{"batch_norm": false}', "--batch-size", "16",
             # (on JAX, in bfloat16 too: the data-parallel path of one process is this one's, less the
             # processes' meeting)
             *(["--mixed-precision"] if backend == "jax" else [])],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=600) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (report["strategy"], report["replicas"], report["epochs_run"]) == ("multiworker", 2, 1)
    assert report["mixed_precision"] == ("mixed_bfloat16" if backend == "jax" else "float32")
    assert not (tmp_path / "run" / "worker-1" / "metrics.json").exists()  # the first process writes the results
    first, second = (keras.saving.load_model(tmp_path / "run" / d / "model.keras") for d in (".", "worker-1"))
    # (batch norm's moving statistics are each worker's own, as with keras' BatchNormalization(synchronized=False))
    for a, b in zip(first.trainable_weights, second.trainable_weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    # validation scored the whole split (29 images: not a whole number of batches of 16, nor of workers): the
    # best epoch's val_miou is the final evaluation of the same model, alone, on the whole split
    with open(tmp_path / "run" / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[report["best_epoch"] - 1]["val_miou"]) == pytest.approx(report["miou"], abs=1e-5)
    # every file is opened once by the scan; a worker's own share of the training images once more, to train
    train = [f"im {i:02d}.png" for i in range(64)]
    for index in range(2):
        opened = (tmp_path / f"opened-{index}.txt").read_text().splitlines()
        again = {name for name in train if opened.count(name) > 1}
        assert again == set(train[index::2]), (index, sorted(again))
        assert all(opened.count(name) == 1 for name in train[1 - index::2])


def test_multiworker_without_its_cluster_settings_is_refused(tmp_path, capsys):
    from kerasseg import train

    assert run_main(train.main, "--model", "unet_tiny", "--strategy", "multiworker", "--output", tmp_path / "r") == 2
    stderr = capsys.readouterr().err
    assert "TF_CONFIG" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "r").exists()


def test_a_binary_0_255_mask_is_named_with_what_to_do(tmp_path, capsys):
    from kerasseg import train

    root = _write_folder(tmp_path / "ds", count=6, palette=False, labels=False)
    for path in (root / "masks").iterdir():  # the commonest hand-made mask: foreground painted white
        mask = np.asarray(Image.open(path))
        Image.fromarray(np.where(mask > 0, 255, 0).astype(np.uint8)).save(path)
    code = run_main(train.main, "--dataset", f"folder:{root}", "--model", "unet_tiny", "--image-size", "32",
                    "--epochs", "1", "--output", tmp_path / "out")
    stderr = capsys.readouterr().err
    assert code == 2 and "Traceback" not in stderr
    assert "img00.png" in stderr and "only 0 and 255" in stderr and "255 // 255" not in stderr
    assert "mask // 255" in stderr  # what to do
    assert not (tmp_path / "out").exists()
    # every problem in one round: a cut-short photo and a mask of another size beside the 0/255 masks (the
    # old code named the first two, then, once they were fixed, the masks)
    content = (root / "images" / "img01.jpg").read_bytes()
    (root / "images" / "img01.jpg").write_bytes(content[: len(content) // 2])
    Image.fromarray(np.zeros((7, 9), np.uint8)).save(root / "masks" / "img02.png")
    code = run_main(train.main, "--dataset", f"folder:{root}", "--model", "unet_tiny", "--image-size", "32",
                    "--epochs", "1", "--output", tmp_path / "out")
    stderr = capsys.readouterr().err
    assert code == 2 and "3 problem(s)" in stderr and "img01.jpg" in stderr and "img02.png is 9x7" in stderr
    assert "only 0 and 255" in stderr


def test_validation_and_evaluation_resize_as_training_does():
    # a fine checkerboard shrunk 4x: an antialiasing resize greys it out, TensorFlow's bilinear does not
    image = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)[..., None].repeat(3, -1)
    image[:, :32] //= 2
    mask = np.zeros((64, 64), np.uint8)
    resized, _ = data.resize_pair(image, mask, (16, 16))
    batch, _ = next(iter(make_dataset([(image, mask)], (16, 16), 1)))
    np.testing.assert_allclose(resized.astype("float32"), batch.numpy()[0], atol=0.5)


def test_predict_refuses_two_inputs_with_one_stem(tmp_path, trained_run, capsys):
    from kerasseg import predict

    for folder, suffix in (("a", "png"), ("b", "jpg")):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / folder / f"frame.{suffix}")
    code = run_main(predict.main, trained_run / "model.keras", tmp_path / "a" / "frame.png",
                    tmp_path / "b" / "frame.jpg", "--output", tmp_path / "out")
    stderr = capsys.readouterr().err
    assert code == 2 and "Traceback" not in stderr
    assert "frame.png" in stderr and "frame.jpg" in stderr and "frame_mask.png" in stderr
    assert not (tmp_path / "out").exists()


def test_errors_name_the_command_the_user_typed(tmp_path):
    result = run_cli("kerasseg.train", "--output", tmp_path / "nothing", "--resume")
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("python -m kerasseg.train: error: --output ") and "holds nothing to resume" in line


def test_make_demo_leaves_the_committed_bundle_alone():
    demo = subprocess.run(["make", "-n", "demo"], cwd=ROOT, capture_output=True, text=True)
    assert demo.returncode == 0 and "export.android" in demo.stdout
    assert "android_demo_assets" not in demo.stdout
    refresh = subprocess.run(["make", "-n", "android-assets"], cwd=ROOT, capture_output=True, text=True)
    assert refresh.returncode == 0 and "--output android_demo_assets" in refresh.stdout
