"""The agreement check on ARM's own kernels (export.arm64): the file run by the aarch64 build of LiteRT under
qemu-user, on emulated cores with and without dot-product, compared with Keras and with the x86 run.

Needs Debian's qemu-user (.ci/run installs it); the runtime is provisioned into the default cache folder
(~/.cache/kerasseg/arm64) by the first test that needs it, and kept."""

import json
import os
import shutil

import pytest

from conftest import program_lines, run_cli
from kerasseg.errors import InputError

pytestmark = pytest.mark.skipif(not (shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")),
                                reason="qemu-user is not installed (Debian: apt-get install qemu-user)")


LOOSE = {"pixel_agreement": 0.95, "miou_drop": 5.0}


@pytest.fixture(scope="module")
def files(trained_run, tmp_path_factory):
    """The trained U-Net's int8 and float16 files, and 12 held-out samples."""
    from export import tflite
    from kerasseg import data

    out = tmp_path_factory.mktemp("arm64")
    test = data.load_split("shapes", "test", (32, 32), 12)
    calibration = data.load_split("shapes", "train", (32, 32), 64).images
    model = trained_run / "model.keras"
    for quantize in ("int8", "float16"):
        tflite.export(model, out / f"{quantize}.tflite", quantize=quantize, calibration=calibration,
                      validation=(test.images, test.masks))
    return model, out, test


def test_the_file_runs_in_the_aarch64_litert_on_each_core_and_agrees_with_x86(files):
    from export import agreement, arm64

    model, out, test = files
    # (the briefly trained model's int8 file agrees with Keras on 98-99.5% of the pixels, by the machine that
    # trained it: the bar here is below that, the same on x86 and on each core; the ARM runs are held to x86's)
    report = agreement.check(model, out / "int8.tflite", (test.images, test.masks), target="arm64",
                             cores=["cortex-a53", "cortex-a76"], thresholds=LOOSE).to_dict()
    targets = report["targets"]
    assert list(targets) == ["cortex-a53", "cortex-a76"]
    assert "asimddp" not in targets["cortex-a53"]["features"].split()  # no dot-product: the NEON kernels
    assert "asimddp" in targets["cortex-a76"]["features"].split()  # SDOT/UDOT kernels
    for core, numbers in targets.items():
        assert numbers["machine"] == "aarch64"  # the aarch64 interpreter ran it
        assert numbers["agreement_with_x86"] >= 0.99, (core, numbers)
        # what differs from x86 is all that can move the agreement with Keras
        assert abs(numbers["pixel_agreement"] - report["pixel_agreement"]) <= 1 - numbers["agreement_with_x86"]
        assert numbers["seconds"] > 0
    # (measured: on these two cores the int8 kernels give x86's outputs exactly, for this file)
    assert targets["cortex-a53"]["outputs_differing_from_x86"] == 0.0
    assert report["passed"], report["failed"]
    # the interpreter's library is an aarch64 ELF file (e_machine 183), not the x86 one
    site = os.path.join(arm64.directory(), "site", "ai_edge_litert")
    libraries = [os.path.join(site, f) for f in os.listdir(site) if f.endswith(".so")]
    assert libraries
    for library in libraries:
        with open(library, "rb") as f:
            header = f.read(20)
        assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183, library


def test_a_file_that_runs_otherwise_than_on_x86_is_reported_as_differing(files):
    """The ARM run against the x86 run of another file (the float16 one): what differs is counted (the same
    file, in the test above, differs nowhere on the A53)."""
    from export import arm64, report as reports
    from export.pipeline import load_model
    from kerasseg.data import values

    model, out, test = files
    keras_model, _, _ = load_model(model)
    held = values.prepared(values.held_out((test.images, test.masks), None, (32, 32))[0], (32, 32),
                           ("background", "disc", "square", "triangle"), None)
    thresholds = reports.DEFAULT_THRESHOLDS["int8"]
    other, _ = arm64.check_targets(keras_model, out / "int8.tflite", held, "logits", thresholds, ["cortex-a53"],
                                   reference=out / "float16.tflite")
    assert other["cortex-a53"]["outputs_differing_from_x86"] > 0.5
    assert other["cortex-a53"]["max_abs_difference_with_x86"] > 0.01


def test_the_command_line_prints_each_core_and_refuses_what_it_cannot_run(files):
    model, out, _ = files
    result = run_cli("export.agreement", model, out / "int8.tflite", "--samples", "4", "--target", "arm64",
                     "--cores", "cortex-a76", "--report", out / "cli.report.json",
                     "--min-pixel-agreement", str(LOOSE["pixel_agreement"]), "--max-miou-drop", str(LOOSE["miou_drop"]))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "on cortex-a76 (Armv8.2-A with dot-product" in result.stdout
    assert list(json.loads((out / "cli.report.json").read_text())["targets"]) == ["cortex-a76"]
    result = run_cli("export.agreement", model, out / "int8.tflite", "--target", "arm64", "--cores", "cortex-a99")
    assert result.returncode == 2
    assert program_lines(result.stderr) == [
        "python -m export.agreement: error: unknown ARM core 'cortex-a99'; accepted: cortex-a53, cortex-a76, "
        "neoverse-n2"]


def test_a_machine_without_qemu_is_told_what_to_install(tmp_path, monkeypatch):
    from export import agreement, arm64

    monkeypatch.setenv("PATH", str(tmp_path))  # (no qemu-aarch64 on it)
    with pytest.raises(arm64.RuntimeMissing, match=r"apt-get install qemu-user"):
        arm64.provision(str(tmp_path / "runtime"))
    assert not (tmp_path / "runtime").exists()
    with pytest.raises(InputError, match="target='arm32' is not one of arm64"):
        agreement.check(None, "x.tflite", None, target="arm32")
