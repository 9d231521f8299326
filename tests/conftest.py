import os
import re
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, timeout=600):
    """Runs `python -m ...` as a user would; returns the CompletedProcess."""
    env = {**os.environ, "PYTHONPATH": ROOT}
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
