"""A file knows its source: the fingerprint of the weights an exported file was converted from, in its metadata.

The agreement check compares a file with a model on held-out images; on its own it cannot tell rounding from
a different model (the same run one epoch later disagrees with this one's file on under 1% of the pixels,
and clears an absolute 0.99). So every file kerasseg writes carries the SHA-256 of its source model's
weights (`of_model`: every weight's shape and float32 values, in the model's order, the batch-norm
statistics and a quantization-aware model's ranges included), and the check says exactly when a file and a
model do not belong together:

- a .tflite file: a `kerasseg_fingerprint` entry in the flatbuffer's metadata (Model.metadata, beside the
  TFLITE_METADATA that MediaPipe's writers add; LiteRT ignores entries it does not know);
- an .onnx file: a `kerasseg_fingerprint` entry in its metadata_props.

The entry is a small JSON object: {"fingerprint": hex digest, "model": the model's name, "weights": how many
arrays}. A file without one (converted by someone else) is checked by statistics instead (export.expected).
"""

import hashlib
import json
import os

import numpy as np

KEY = "kerasseg_fingerprint"


def of_model(model):
    """The SHA-256 (hex) of `model`'s weights: each one's shape and float32 values, in the model's order."""
    import keras

    digest = hashlib.sha256()
    for weight in model.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight), np.float32)
        digest.update(repr(value.shape).encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def record(model):
    """The entry a file of `model` carries."""
    return {"fingerprint": of_model(model), "model": model.name, "weights": len(model.weights)}


def short(fingerprint):
    return fingerprint[:12] if fingerprint else None


def _stamp_tflite(content, entry):
    from export import internals

    schema = internals.tflite_schema()

    def edit(model):
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(json.dumps(entry).encode(), np.uint8)
        model.buffers.append(buffer)
        metadata = schema.MetadataT()
        metadata.name, metadata.buffer = KEY, len(model.buffers) - 1
        kept = [m for m in (model.metadata or []) if _text(m.name) != KEY]
        model.metadata = kept + [metadata]

    return internals.edit_tflite(content, edit)[0]


def _text(name):
    return name.decode() if isinstance(name, bytes) else name


def _read_tflite(path):
    from export import internals

    with open(path, "rb") as f:
        content = f.read()
    model = internals.tflite_schema().Model.GetRootAs(content, 0)
    for i in range(model.MetadataLength()):
        metadata = model.Metadata(i)
        if _text(metadata.Name()) == KEY:
            return json.loads(model.Buffers(metadata.Buffer()).DataAsNumpy().tobytes())
    return None


def _stamp_onnx(content, entry):
    import onnx

    model = onnx.load_from_string(bytes(content))
    kept = [(p.key, p.value) for p in model.metadata_props if p.key != KEY]
    del model.metadata_props[:]
    for key, value in kept + [(KEY, json.dumps(entry))]:
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    return model.SerializeToString()


def _read_onnx(path):
    import onnx

    for prop in onnx.load(os.fspath(path), load_external_data=False).metadata_props:
        if prop.key == KEY:
            return json.loads(prop.value)
    return None


STAMPS = {".tflite": (_stamp_tflite, _read_tflite), ".onnx": (_stamp_onnx, _read_onnx)}


def stamp(content, suffix, entry):
    """`content` (a file's bytes, of `suffix`) carrying `entry` (`record`); unchanged for a kind of file that
    has no place for it."""
    writer = STAMPS.get(suffix.lower())
    return writer[0](content, entry) if writer else content


def read(path):
    """The entry the file at `path` carries, or None (a file converted elsewhere, or of a kind without one)."""
    reader = STAMPS.get(os.path.splitext(os.fspath(path))[1].lower())
    try:
        return reader[1](path) if reader else None
    except (ValueError, KeyError, TypeError):  # (a damaged or foreign entry: as if none)
        return None
