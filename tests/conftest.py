import os
import re
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "data"))  # awkward_folders: the user's own files


COMPILER_LOGS = Path(ROOT) / "tests" / "data" / "edgetpu_compiler"  # edgetpu_compiler 16's output, as it prints it


def run_cli(*args, timeout=600, env=None):
    """Runs `python -m ...` as a user would (`env`: variables to set); returns the CompletedProcess."""
    env = {**os.environ, "PYTHONPATH": ROOT, **(env or {})}
    return subprocess.run([sys.executable, "-m", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


_TF_LOG = re.compile(r"^(WARNING: All log messages before absl|[IWE]\d{4} )")


def program_lines(stderr):
    """stderr without the C++ log lines TensorFlow prints at import, which no flag silences."""
    return [line for line in stderr.strip().splitlines() if not _TF_LOG.match(line)]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A tiny U-Net trained briefly on shapes at 32x32 through the real CLI."""
    out = tmp_path_factory.mktemp("run")
    result = run_cli("kerasseg.train", "--model", "unet_tiny", "--image-size", "32", "--epochs", "3",
                     "--batch-size", "16", "--train-samples", "256", "--lr", "0.01", "--output", out)
    assert result.returncode == 0, result.stderr
    return out


USER_CLASSES = ("soil", "leaf", "stone")


def write_user_folder(root, count=30, seed=7, sizes=((40, 56), (48, 48), (36, 60), (52, 44)), value_range=(40, 200)):
    """A user's own `folder:` dataset, unlike `shapes`: custom class names, mixed sizes and formats, and
    pixels that span only `value_range` (a dim camera), with blobs whose class follows their hue."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    low, high = value_range
    colours = np.array([[150, 110, 70], [70, 170, 80], [140, 140, 150]], np.float64)  # soil, leaf, stone
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(count):
        h, w = sizes[i % len(sizes)]
        yy, xx = np.mgrid[:h, :w]
        mask = np.zeros((h, w), np.uint8)
        for _ in range(rng.integers(1, 4)):
            cy, cx, ry, rx = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(5, h / 2), rng.uniform(5, w / 2)
            mask[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = rng.integers(1, 3)
        image = colours[mask] + rng.normal(0, 12, (h, w, 3))
        image = np.clip(image, low, high).astype(np.uint8)
        image[0, 0], image[-1, -1] = low, high  # the range is spanned exactly
        Image.fromarray(image).save(root / "images" / f"plot_{i:03d}.{('png', 'jpg')[i % 2]}", quality=95)
        Image.fromarray(mask).save(root / "masks" / f"plot_{i:03d}.png")
    (root / "labels.txt").write_text("\n".join(USER_CLASSES) + "\n")
    return root


@pytest.fixture(scope="session")
def user_run(tmp_path_factory):
    """A tiny U-Net trained through the CLI on a user's folder with a non-zero seed, as the README says."""
    base = tmp_path_factory.mktemp("user")
    folder = write_user_folder(base / "plots")
    out = base / "run"
    result = run_cli("kerasseg.train", "--model", "unet_tiny", "--dataset", f"folder:{folder}", "--image-size", "32",
                     "--epochs", "3", "--batch-size", "8", "--lr", "0.01", "--seed", "3", "--output", out)
    assert result.returncode == 0, result.stderr
    return out, folder
