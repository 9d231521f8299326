"""Files written whole or not at all, and the trained model read back with a clear error.

Every file kerasseg writes (models, weights, reports, histories, figures)
goes through `atomic_write`: a temporary name in the same directory, then a
rename, so a crash at any instant leaves the old file or the new one, never
a torn one.
"""

import contextlib
import os
import tempfile
from dataclasses import dataclass

from kerasseg.errors import InputError, WriteError


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write):
    """Calls `write(tmp_path)`, then renames the temporary file to `path`.

    A crash or an error leaves `path` as it was: never a partial file. The
    temporary file keeps `path`'s suffix, which some writers insist on.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path).lstrip(".")
    suffix = name[name.index("."):] if "." in name else ""  # all of it: ".weights.h5" is one suffix to Keras
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix)
        os.close(fd)
    except OSError as error:
        raise WriteError(path, error) from None
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make the file private
        os.replace(tmp, path)
    except OSError as error:  # a full disk, a quota, a read-only or failing device (h5py's errors too)
        raise WriteError(path, error) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_bytes_atomic(path, data):
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)

    atomic_write(path, write)


def write_text_atomic(path, text):
    # surrogateescape: a file name that is not valid UTF-8 (os.listdir gives it with surrogates) survives
    write_bytes_atomic(path, text.encode("utf-8", errors="surrogateescape"))


def json_text(value):
    """`value` as indented JSON text, each NaN or infinite number written as null (JSON has no NaN)."""
    import json
    import math

    def finite(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: finite(x) for k, x in v.items()}
        return [finite(x) for x in v] if isinstance(v, (list, tuple)) else v

    return json.dumps(finite(value), indent=2, allow_nan=False) + "\n"


def write_lines_atomic(path, lines):
    """One item per line, each exactly as it is (spaces, dots, any script); an item with a line break is a
    ValueError, since no line-based list could hold it."""
    broken = [line for line in lines if "\n" in line or "\r" in line]
    if broken:
        raise ValueError(f"cannot list {broken[0]!r} in {path}: it holds a line break")
    write_text_atomic(path, "".join(f"{line}\n" for line in lines))


def read_lines(path):
    """The items `write_lines_atomic` wrote, exactly."""
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        text = f.read()
    return text.split("\n")[:-1] if text else []


def ensure_output_dir(path):
    """Creates the directory that will hold `path`, or raises an InputError naming it."""
    directory = os.path.dirname(os.path.abspath(os.fspath(path)))
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot create output directory {directory}: {error.strerror}") from None
    if not os.access(directory, os.W_OK):
        raise InputError(f"output directory {directory} is not writable")
    return directory


def check_writable(*paths):
    """An InputError unless every one of `paths` can be written: its folder made and written into (a file
    created and removed there, which os.access cannot tell for a superuser or a read-only mount), the path
    itself not a folder. For work whose result would otherwise be lost at its end."""
    for directory in dict.fromkeys(ensure_output_dir(path) for path in paths):
        try:
            fd, probe = tempfile.mkstemp(dir=directory, prefix=".probe-")
            os.close(fd)
            os.remove(probe)
        except OSError as error:
            raise InputError(f"cannot write into {directory}: {error.strerror}") from None
    for path in paths:
        if os.path.isdir(path):
            raise InputError(f"{path} is a folder: a file cannot be written in its place")


@contextlib.contextmanager
def output_folder(path):
    """Makes the folder `path` (an InputError naming it if it cannot be), and removes it again on leaving if
    it was made here and nothing was written into it: a refused export leaves no empty folder behind."""
    made = not os.path.isdir(path)
    ensure_output_dir(os.path.join(path, "x"))
    try:
        yield path
    finally:
        if made and os.path.isdir(path) and not os.listdir(path):
            os.rmdir(path)


@dataclass(frozen=True)
class ModelFile:
    """A model already loaded from its .keras file (`path`): what the exporters take to use the model without
    loading it again, and report under the file's name."""

    model: object
    path: str


def load_keras_model(path):
    """Loads a .keras file written by kerasseg, or raises an InputError naming the path."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"model file not found: {path}")
    if not path.endswith(".keras"):
        raise InputError(f"{path} is not a Keras model: expected a .keras file written by model.save()")
    import zipfile

    import keras

    from kerasseg import described, layers, losses, metrics  # noqa: F401 (registered: a command line imports
    # kerasseg without them until it needs them)

    if not zipfile.is_zipfile(path):
        raise InputError(f"{path} is not a Keras model file: a .keras file is a zip archive (what model.save() "
                         "writes), and this one is not")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # zip, json and config errors all mean "not a usable model"
        raise InputError(f"{path} is not a readable Keras model: {type(error).__name__}: {error}") from None
    return check_image_input(model, path)


def check_image_input(model, name):
    """`model`, or an InputError naming it (`name`) unless it takes one RGB image batch (N, H, W, 3)."""
    inputs = model.inputs
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[-1] != 3:
        shapes = [tuple(i.shape) for i in inputs]
        raise InputError(f"{name}: the model's input is not one RGB image batch (N, H, W, 3); it has inputs {shapes}")
    return model


def float32_model(model):
    """`model` computing in float32: itself, or, if any layer has a mixed-precision policy (bfloat16 or
    float16 compute), a copy rebuilt layer for layer in float32 with the same weights. The converters cannot
    lower mixed precision, and the int8 simulation must round float32 values."""
    import keras

    mixed = set()

    def to_float32(node):
        if isinstance(node, dict):
            if node.get("class_name") == "DTypePolicy" and str(node["config"].get("name", "")).startswith("mixed"):
                mixed.add(node["config"]["name"])
                return {**node, "config": {**node["config"], "name": "float32"}}
            return {k: to_float32(v) for k, v in node.items()}
        return [to_float32(v) for v in node] if isinstance(node, list) else node

    config = to_float32(keras.saving.serialize_keras_object(model))
    if not mixed:
        return model, "float32"
    rebuilt = keras.saving.deserialize_keras_object(config)
    rebuilt.set_weights(model.get_weights())
    return rebuilt, "/".join(sorted(mixed))
