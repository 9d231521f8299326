"""The exporter contract is written once (export.formats): a new format is one file."""

import collections
import json
import os
import subprocess
import sys

from conftest import ROOT

# A whole format, as a user would add one: its file is the Keras model, its runtime Keras itself. Its one option
# rounds the weights to N decimals, so a file that computes something else can be made and the check seen to catch it.
TOY_FORMAT = '''"""python -m toy_format MODEL.keras --output FILE.kerasfile: the model as a Keras file, run by Keras."""

import os
import shutil
import sys
import tempfile

import numpy as np

from kerasseg import cli
from export import formats


class KerasRunner:
    runtime = "keras"
    quantization = "float32"

    def __init__(self, path, num_threads=None):
        import keras

        with tempfile.TemporaryDirectory() as folder:  # (Keras loads only files named .keras)
            shutil.copy(path, os.path.join(folder, "m.keras"))
            self.model = keras.saving.load_model(os.path.join(folder, "m.keras"), compile=False)
        self.input_size = None  # (any size)

    def __call__(self, image):
        return np.asarray(self.model.predict_on_batch(image[None].astype(np.float32)))[0]


def _convert(model, size, found, options):
    import keras

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "m.keras")
        model.save(path)
        if options["weights_decimals"] is not None:  # (on a copy: `model` is what the file is checked against)
            copy = keras.saving.load_model(path, compile=False)
            copy.set_weights([np.round(w, options["weights_decimals"]) for w in copy.get_weights()])
            copy.save(path)
        with open(path, "rb") as f:
            return f.read(), {"weights_decimals": options["weights_decimals"]}


def _add_options(parser):
    parser.add_argument("--weights-decimals", type=int, help="round every weight to this many decimals")


FORMAT = formats.register(formats.Format(
    name="toy", suffix=".kerasfile", module="toy_format", convert=_convert, runner=KerasRunner,
    add_options=_add_options, options_from=lambda args: {"weights_decimals": args.weights_decimals},
    defaults={"weights_decimals": None}))


def export(model, output, weights_decimals=None, **data):
    return formats.export(FORMAT, model, output, weights_decimals=weights_decimals, **data)


def main(argv=None):
    return formats.main(FORMAT, argv, __doc__)


if __name__ == "__main__":
    sys.exit(cli.run(main))
'''


def test_a_new_format_is_one_file(trained_run, tmp_path):
    """The toy format above, dropped beside the package and nothing else edited: its command line has every
    exporter's options and reads the run's own data, its file is checked in its own runtime (and a file that
    computes something else fails the check), and Python calls it on an in-memory model and arrays."""
    (tmp_path / "toy_format.py").write_text(TOY_FORMAT)
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "2"}

    def run(*args):
        return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=600)

    helped = run("-m", "toy_format", "--help")
    assert helped.returncode == 0 and "--weights-decimals" in helped.stdout and "--samples" in helped.stdout
    good = run("-m", "toy_format", trained_run / "model.keras", "--output", tmp_path / "good.kerasfile")
    assert good.returncode == 0, good.stderr[-2000:]
    report = json.loads((tmp_path / "good.report.json").read_text())
    assert report["runtime"] == "keras" and report["passed"] and report["pixel_agreement"] == 1.0
    assert report["dataset"].startswith("shapes") and report["image_size"] == [32, 32]  # (the run's record)
    rounded = run("-m", "toy_format", trained_run / "model.keras", "--output", tmp_path / "rounded.kerasfile",
                  "--weights-decimals", "0")
    assert rounded.returncode == 1 and "FAILED" in rounded.stderr, rounded.stderr[-2000:]
    assert not json.loads((tmp_path / "rounded.report.json").read_text())["passed"]
    sys.path.insert(0, str(tmp_path))  # (the same file, imported here: Python on an in-memory model and arrays)
    try:
        import keras
        import toy_format

        from kerasseg import data

        model = keras.saving.load_model(trained_run / "model.keras")
        test = data.load_split("shapes", "test", (32, 32), 8)
        report = toy_format.export(model, tmp_path / "python.kerasfile", validation=(test.images, test.masks))
    finally:
        sys.path.remove(str(tmp_path))
    assert type(report).__name__ == "ExportReport" and report.passed and report["samples"] == 8


def test_an_int8_export_and_the_android_bundle_read_the_run_and_load_the_model_once(user_run, tmp_path):
    """One resolution of the model file (kerasseg.resolve.stage) for the whole command: the old code opened
    run.json 3 times and model.keras twice for an int8 export, 4 times and twice for the Android bundle."""
    from export import android, tflite
    from kerasseg import files
    from kerasseg.training import rundir

    from conftest import run_main

    run, _ = user_run
    watched = {os.path.join(run, name): name for name in ("run.json", "model.keras")}
    counting, opened = [False], collections.Counter()

    def hook(event, args):
        if counting[0] and event == "open" and isinstance(args[0], str) and args[0] in watched:
            opened[watched[args[0]]] += 1

    sys.addaudithook(hook)  # (a hook stays for the process's life: it counts only while counting[0])

    def opens(call):
        opened.clear()
        counting[0] = True
        try:
            result = call()
        finally:
            counting[0] = False
        return result, dict(opened)

    _, one_load = opens(lambda: files.load_keras_model(run / "model.keras"))
    _, one_read = opens(lambda: rundir.Run.of_model(run / "model.keras"))
    once = {**one_load, **one_read}
    assert once == {"model.keras": one_load["model.keras"], "run.json": 1}
    status, exported = opens(lambda: run_main(tflite.main, run / "model.keras", "--quantize", "int8", "--output",
                                              tmp_path / "m.tflite"))
    assert status == 0 and exported == once
    status, bundled = opens(lambda: run_main(android.main, run / "model.keras", "--output", tmp_path / "bundle"))
    assert status == 0 and bundled == once
