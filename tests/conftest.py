import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# On JAX, XLA's CPU compiler at its default optimization spends 2-5 s on each weight initializer's program
# (a 3x3x8x16 truncated normal: 4.7 s; unet_tiny's first build: 33 s), and the tests' models are tiny, so
# compiling was most of their time. Unoptimized code computes the same; the JAX suite took 461 s, now 249 s.
# (TensorFlow on CPU does not compile with XLA; the variable reaches the tests' subprocesses too.)
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "data"))  # awkward_folders: the user's own files

from awkward_folders import CLASSES as USER_CLASSES  # noqa: E402,F401 (the user's class names)


COMPILER_LOGS = Path(ROOT) / "tests" / "data" / "edgetpu_compiler"  # edgetpu_compiler 16's output, as it prints it


def run_cli(*args, timeout=600, env=None):
    """Runs `python -m ...` as a user would (`env`: variables to set); returns the CompletedProcess."""
    env = {**os.environ, "PYTHONPATH": ROOT, **(env or {})}
    return subprocess.run([sys.executable, "-m", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def run_main(main, *args):
    """Runs a command's `main` in this process as its command line would (a UsageError: exit 2, a WriteError:
    exit 1, an argparse error: exit 2); returns the exit status, its messages left to capsys. It spares a test of
    what the command says the seconds that a new process spends importing TensorFlow."""
    from kerasseg import cli

    try:
        return cli.run(main, [str(a) for a in args])
    except SystemExit as exit:
        return exit.code


@pytest.fixture
def run_here(capsys, monkeypatch):
    """run_cli's twin for a test of what a command computes more than of its process: `python -m MODULE`'s
    main run in this process (`env`: variables set while it runs); returns its exit status and output."""
    import importlib
    import types

    def run(module, *args, env=None):
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        code = run_main(importlib.import_module(module).main, *args)
        output = capsys.readouterr()
        return types.SimpleNamespace(returncode=code, stdout=output.out, stderr=output.err)

    return run


_TF_LOG = re.compile(r"^(WARNING: All log messages before absl|[IWE]\d{4} )")


def program_lines(stderr):
    """stderr without the C++ log lines TensorFlow prints at import, which no flag silences."""
    return [line for line in stderr.strip().splitlines() if not _TF_LOG.match(line)]


def once_per_session(tmp_path_factory, name, make):
    """The folder `name`, filled by `make(folder)` once per test session: the first pytest-xdist worker to ask
    makes it while the others wait, then all read it (each worker would otherwise train its own copy of the
    session's runs). What uses it must only read it."""
    import fcntl

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, above each worker's own
    folder = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # (released when the file closes, or its process dies)
        if not (folder / ".made").exists():
            shutil.rmtree(folder, ignore_errors=True)  # (what a worker that failed left)
            folder.mkdir()
            make(folder)
            (folder / ".made").touch()
    return folder


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A tiny U-Net trained briefly on shapes at 32x32 through the real CLI."""
    def make(out):
        result = run_cli("kerasseg.train", "--model", "unet_tiny", "--image-size", "32", "--epochs", "3",
                         "--batch-size", "16", "--train-samples", "256", "--lr", "0.01", "--output", out)
        assert result.returncode == 0, result.stderr

    return once_per_session(tmp_path_factory, "run", make)


@pytest.fixture(scope="session")
def user_run(tmp_path_factory):
    """A small U-Net trained well (validation mIoU about 0.97) through the CLI, as the README says, on a
    user's own folder as real folders are (tests/data/awkward_folders.py: sideways phone photos, 16-bit,
    palette and CMYK images, names with spaces and non-ASCII letters, a dim camera's pixel range), typed with
    a trailing slash, with custom class names and a non-zero seed."""
    from awkward_folders import write_awkward_folder

    def make(base):
        write_awkward_folder(base / "my plots", count=48)
        result = run_cli("kerasseg.train", "--model", "unet_tiny", "--model-args", '{"base_filters": 8}',
                         "--dataset", f"folder:{base / 'my plots'}/", "--image-size", "32", "--epochs", "15",
                         "--batch-size", "8", "--lr", "0.01", "--augment", "flip", "--seed", "3", "--output",
                         base / "run")
        assert result.returncode == 0, result.stderr

    base = once_per_session(tmp_path_factory, "user", make)
    return base / "run", base / "my plots"


@pytest.fixture(scope="session")
def mixed_run(user_run, tmp_path_factory):
    """The user's run as `--mixed-precision` saves it: the same trained weights in a model that computes in
    bfloat16 (float32 variables and logits), beside a copy of the run's record."""
    import keras

    from kerasseg import models

    run, _ = user_run
    out = tmp_path_factory.mktemp("mixed") / "run"
    shutil.copytree(run, out, ignore=shutil.ignore_patterns("backup", "logs", "model.keras"))
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = models.create_model("unet_tiny", classes=len(USER_CLASSES), base_filters=8)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model.set_weights(keras.saving.load_model(run / "model.keras", compile=False).get_weights())
    model.save(out / "model.keras")
    return out


def binary_folder(root, count=160, size=48, labels="shape\n", painted=False):
    """A folder of `shapes` images whose masks are 0 (background) and 1 (any shape); `painted`: 0 / 255 JPEG
    masks, as Kvasir ships them (their ringing included). Returns it and the shapes split it was made of."""
    import numpy as np
    from PIL import Image

    from kerasseg import data

    split = data.load_split("shapes", "train", (size, size), count=count)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i, (image, mask) in enumerate(zip(split.images, split.masks)):
        Image.fromarray(image).save(root / "images" / f"p {i:03d}.png")
        if painted:
            Image.fromarray(np.where(mask > 0, 255, 0).astype(np.uint8)).save(root / "masks" / f"p {i:03d}.jpg",
                                                                              quality=75)
        else:
            Image.fromarray((mask > 0).astype(np.uint8)).save(root / "masks" / f"p {i:03d}.png")
    if labels is not None:
        (root / "labels.txt").write_text(labels)
    return root, split


@pytest.fixture(scope="session")
def binary_run(tmp_path_factory):
    """A binary U-Net (one foreground logit) trained from a folder of 0/1 masks (foreground IoU about 0.69)."""
    from kerasseg.training import rundir
    from kerasseg.train import TrainConfig, train

    def make(base):
        folder, _ = binary_folder(base / "my lesions")
        train(TrainConfig(base / "run", model="unet_tiny", model_args={"base_filters": 8}, dataset=f"folder:{folder}",
                          classes=1, image_size=48, epochs=12, batch_size=8, lr=0.01, augment="flip", loss="ce+dice"))

    base = once_per_session(tmp_path_factory, "binary", make)
    return rundir.Run.read(base / "run"), base / "my lesions"
