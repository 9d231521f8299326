"""kerasseg: landmark CNN classifiers and semantic segmenters as Keras 3 functional builders.

`import kerasseg` registers kerasseg's custom layers, losses and metrics with
Keras, so a saved `model.keras` (a training run's, compiled with its loss)
loads with plain `keras.saving.load_model`.

(kerasseg's own command lines, `python -m kerasseg.X` and `python -m export.X`,
import Keras only once their arguments are parsed, so that `--help` and a
bad flag answer at once; they register what a model file needs before
loading one.)

Importing kerasseg before TensorFlow on an x86 CPU turns on oneDNN's CPU
kernels (`TF_ENABLE_ONEDNN_OPTS=1` unless the variable is set): on Linux,
TensorFlow enables them by itself only on CPUs with AVX-512 VNNI or BF16,
AVX-VNNI or AMX, and on an AVX2 machine without them a training step of the
demo's U-Net takes 1.3-1.8 times as long, a DeepLab v3+ on MobileNetV2's
about 5 times (docs/training.md, "CPU speed"). `TF_ENABLE_ONEDNN_OPTS=0`
turns them off. Imported after TensorFlow, kerasseg leaves the variable
alone: TensorFlow has made its choice.
"""

import os
import platform
import sys

if platform.machine().lower() in ("x86_64", "amd64") and "tensorflow" not in sys.modules:  # (measured on x86)
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"
_DESCRIBED = ("Description", "DescribedModel", "describe", "description")


def register():
    """Registers kerasseg's serializable layers, losses and metrics with Keras (what `import kerasseg` does)."""
    from kerasseg import described, layers, losses, metrics  # noqa: F401


def _a_command_is_starting():
    """Whether kerasseg is being imported by one of its command lines as it starts (`python -m kerasseg.X` or
    `export.X`, before or while its module runs)."""
    main = getattr(getattr(sys.modules.get("__main__"), "__spec__", None), "name", None) or ""
    return sys.argv[:1] == ["-m"] or main.startswith(("kerasseg.", "export."))


def __getattr__(name):  # kerasseg.describe and its kin, imported when first asked for
    if name in _DESCRIBED:
        from kerasseg import described

        return getattr(described, name)
    raise AttributeError(f"module 'kerasseg' has no attribute {name!r}")


if not _a_command_is_starting():
    register()
