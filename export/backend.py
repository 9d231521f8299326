"""Exporting from any Keras backend: the conversion and its check run where TensorFlow can trace the model.

TFLite's converter and tf2onnx trace a TensorFlow graph, which a model on the
JAX backend cannot give (`Cannot convert a symbolic tf.Tensor to a numpy
array`), and Keras' own `model.export(format="litert")` refuses the JAX
backend outright. So under any backend but TensorFlow every exporter runs
itself in a child process under the TensorFlow backend: the model goes as a
`.keras` file (the same file on every backend), the data it was given as
arrays in a temporary folder (a tf.data pipeline or an iterable read here,
the first `samples` of it, as the exporter would), and the report comes back
as the same ExportReport; the command lines run themselves again, with the
same arguments. An InputError in the child is raised here, as it is.

    python -m export.backend REQUEST.json     (the child; nothing for a user to call)
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from kerasseg.errors import InputError

DATA_OPTIONS = ("validation", "calibration", "tuning")
_COUNTS = {"validation": "samples", "calibration": "calibration_samples", "tuning": "samples"}


def foreign():
    """Whether Keras runs on another backend than TensorFlow (an export must then run elsewhere)."""
    import keras

    return keras.backend.backend() != "tensorflow"


def _child(arguments, env=None):
    environment = {**os.environ, "KERAS_BACKEND": "tensorflow", **(env or {})}
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # (the checkout, for a source tree)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [here, environment.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, *arguments], env=environment).returncode


def rerun(module, argv):
    """A command line's exit status, run again as `python -m module argv` under the TensorFlow backend."""
    return _child(["-m", module, *(sys.argv[1:] if argv is None else [str(a) for a in argv])])


def _portable(value, key, count, folder):
    """`value` (given as `key`) as something the child can read: a spec as it is; arrays, a Split, a
    tf.data.Dataset or an iterable saved as an .npz file of its first `count` samples (the exporter's cap)."""
    from kerasseg import data
    from kerasseg.data import values

    if value is None or isinstance(value, str):
        return value
    meta = {}
    if isinstance(value, data.Pairs):  # (pairs of any sizes: read back as Pairs)
        meta = {"class_names": list(value.class_names), "spec": value.spec, "pairs": True}
        value = value.pairs
    if isinstance(value, data.Split):
        meta = {"class_names": list(value.class_names), "spec": value.spec}
        value = (value.images, value.masks) if value.masks is not None else value.images
    default = values.DEFAULT_CALIBRATION_SAMPLES if key == "calibration" else values.DEFAULT_SAMPLES
    pairs, _ = values._pairs(value, key, count, default)
    arrays = {f"image_{i}": np.asarray(image) for i, (image, _) in enumerate(pairs)}
    arrays.update({f"mask_{i}": np.asarray(mask) for i, (_, mask) in enumerate(pairs) if mask is not None})
    path = os.path.join(folder, f"{key}.npz")
    np.savez(path, **arrays)
    return {"npz": path, "count": len(pairs), **meta}


def _read_portable(value):
    """What `_portable` wrote, as the value the exporter takes: a list of (image, mask) pairs, or a Split."""
    from kerasseg import data

    if not isinstance(value, dict):
        return value
    with np.load(value["npz"]) as saved:
        pairs = [(saved[f"image_{i}"], saved[f"mask_{i}"] if f"mask_{i}" in saved else None)
                 for i in range(value["count"])]
    if value.get("pairs"):
        return data.Pairs(pairs, tuple(value["class_names"]), value["spec"])
    if "class_names" in value and pairs and all(mask is not None for _, mask in pairs) and \
            len({image.shape for image, _ in pairs}) == 1:
        return data.Split(np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]),
                          tuple(value["class_names"]), 0, value["spec"])
    return pairs if any(mask is not None for _, mask in pairs) else [image for image, _ in pairs]


def export_elsewhere(module, model, output, options):
    """The ExportReport of `module`'s export(model, output, **options), run under the TensorFlow backend."""
    from export import report as reports

    from kerasseg import files

    if isinstance(model, files.ModelFile):  # (loaded once here; the child loads its file)
        model = model.path
    name = None if isinstance(model, (str, os.PathLike)) else model.name
    with tempfile.TemporaryDirectory() as folder:
        if name is not None:
            path = os.path.join(folder, f"{model.name}.keras")
            try:
                model.save(path)
            except Exception as error:
                raise InputError(f"{model.name} cannot be exported from the {_backend()} backend: the export runs "
                                 "under TensorFlow from a .keras file, and saving the model failed "
                                 f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") \
                    from None
            model = path
        options = dict(options)
        for key in DATA_OPTIONS:
            if key in options:
                options[key] = _portable(options[key], key, options.get(_COUNTS[key]), folder)
        request = os.path.join(folder, "request.json")
        result = os.path.join(folder, "result.json")
        with open(request, "w") as f:
            json.dump({"module": module, "model": os.fspath(model), "name": name, "output": os.fspath(output),
                       "options": options, "result": result}, f)
        code = _child(["-m", "export.backend", request])
        if not os.path.isfile(result):
            raise RuntimeError(f"the export under the TensorFlow backend ended with status {code} and no report "
                               "(its messages are above)")
        with open(result) as f:
            answer = json.load(f)
    if "error" in answer:
        raise InputError(answer["error"])
    report = answer["report"]
    if name is not None:  # (the model in memory, not the temporary file it went to the child as)
        report["model"] = name
        reports.write_report(report, reports.report_path(output))
    return reports.ExportReport.from_dict(report)


def _backend():
    import keras

    return keras.backend.backend()


def main(argv=None):
    """The child: runs the request's export and writes its report (or its InputError) to the result file."""
    import importlib

    from kerasseg import files

    with open((argv or sys.argv[1:])[0]) as f:
        request = json.load(f)
    options = {key: _read_portable(value) if key in DATA_OPTIONS else value
               for key, value in request["options"].items()}
    for key in ("image_size",):
        if isinstance(options.get(key), list):
            options[key] = tuple(options[key])
    try:
        model = request["model"]
        if request.get("name"):  # (a model in memory, saved to a temporary file: named as the user named it)
            model = files.ModelFile(files.load_keras_model(model), request["name"])
        report = importlib.import_module(request["module"]).export(model, request["output"], **options)
        answer = {"report": report.to_dict()}
    except InputError as error:
        answer = {"error": str(error)}
    files.write_text_atomic(request["result"], files.json_text(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
