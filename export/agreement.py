"""Does the exported model still agree with the Keras one? Measured in the real runtime.

    python -m export.agreement MODEL.keras EXPORTED.{tflite,onnx} [--dataset shapes] [--samples 50]

The exported file runs in the runtime a device uses (the LiteRT interpreter,
ONNX Runtime) on held-out test samples that calibration never saw, each fed
as an app feeds the file (stretched to its input size, as MediaPipe's
ImageSegmenter does) and scored at its own size. Reported: logit errors, the
share of pixels whose predicted class is unchanged, and the mIoU of both
models against the ground truth; FILE.disagreement.png shows the held-out
images where the two disagree most (image | Keras prediction | exported
prediction | the pixels that differ, in red).

A file kerasseg wrote carries the fingerprint of the weights it came from
(export.fingerprint): a file of another model (the same run one epoch later)
fails, named as such, unless --other-weights says the pairing is meant. A
file converted elsewhere carries none: it is held to what the same
quantization of this model does here (export.expected), not to one absolute
agreement for every model. An mIoU gain beyond sampling noise fails too.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from kerasseg import cli
from kerasseg.cli import UsageError
from export import commands

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    import keras
    import numpy as np

    from kerasseg.files import ModelFile
    from export.report import ExportReport

qat, resolve, per_tensor, pipeline, reports, runtimes, fingerprints, expected, values, arm64 = cli.lazy_import(
    "kerasseg.qat", "kerasseg.resolve", "export.per_tensor", "export.pipeline", "export.report", "export.runtimes",
    "export.fingerprint", "export.expected", "kerasseg.data.values", "export.arm64")


def check(model: keras.Model | str | os.PathLike | ModelFile, exported: str | os.PathLike,
          validation: np.ndarray | tuple | Iterable | str, *, class_names: Sequence[str] | None = None,
          samples: int | str | None = None, thresholds: dict[str, float] | None = None, other_weights: bool = False,
          report: str | os.PathLike | None = None, extra: dict | None = None, target: str | None = None,
          cores: Sequence[str] | None = None) -> ExportReport:
    """Checks an exported file (.tflite or .onnx) against its Keras model, in the file's real runtime.

    The file runs in the runtime a device uses (the LiteRT interpreter, ONNX Runtime) on held-out samples, each
    fed as an app feeds the file (stretched to its input size) and scored at its own size, and is compared with
    the model. A file without a fingerprint (converted elsewhere) is held to what the same quantization of
    `model` does here (export.expected); an mIoU gain beyond sampling noise fails too. The report is written to
    `report` with its figure.

    Args:
        model: the Keras model: a keras.Model, the path of its .keras file, or a kerasseg.files.ModelFile (a model
            already loaded from its file). A quantization-aware model is compared as its float twin with a file
            without int8 arithmetic (export.formats).
        exported: the exported file, a .tflite or an .onnx file; its runtime is chosen by its suffix.
        validation: the held-out images, with masks for the mIoU, as the exporters' validation= takes them:
            arrays (images, or (images, masks)), tf.data, (image, mask) pairs of any sizes, a kerasseg.data.Split,
            a dataset spec (its test split).
        class_names: the per-class IoU's names, one per class, used when `validation` does not name its classes
            (a dataset spec does). Default: the model's own (kerasseg.describe), else class_0, class_1, ...
        samples: how many of `validation` are compared, the first ones: a positive integer or "all"; default 50.
        thresholds: {name: value} replacing the mode's defaults (report.DEFAULT_THRESHOLDS; the mode is the file's
            quantization), names among "pixel_agreement", "max_abs_error", "mean_abs_error" and "miou_drop".
        other_weights: the file is meant to come from other weights than the model's (e.g. converted by someone
            else from a retrained copy): its fingerprint then differs without failing, and the report notes it
            (default False: a file of another model fails, named as such).
        report: where to write the report (default FILE.report.json beside `exported`); the figure,
            FILE.disagreement.png (the held-out images where the two disagree most), goes beside it.
        extra: more fields for the report, added to (or replacing) the model, dataset, image size and training
            policy entries.
        target: None (the default: this machine only) or "arm64": the file (.tflite only) also runs on the ARM
            `cores` (export.arm64: the aarch64 LiteRT under qemu-user, emulated), held to the same thresholds
            there, and compared with its x86 run (the report's "targets").
        cores: with target "arm64", the ARM cores to run on: "cortex-a53" (no dot-product), "cortex-a76"
            (dot-product), "neoverse-n2" (i8mm); default a Cortex-A53 and an A76. Ignored without `target`.

    Returns:
        The ExportReport (export.report), as written to `report`: `passed` (every threshold held), `failed` (what
        failed, as "pixel_agreement 0.97 < 0.99", a fingerprint of other weights, an ARM core's failures),
        `pixel_agreement` (the share of pixels whose predicted class is unchanged), `miou_reference` and
        `miou_exported` (the model's and the file's mIoU against the ground truth; None without masks),
        `miou_drop`, `max_abs_error`, `mean_abs_error`, `size_bytes`; `report["key"]` reads the rest (e.g.
        "thresholds", "fingerprint", "expected", "disagreement_png", "targets").

    Raises:
        InputError: (a ValueError, kerasseg.errors) a `target` other than None or "arm64", a target for a file
            that is not a .tflite, an unknown ARM core (before any work); an `exported` file that is missing, of
            an unknown suffix or that its runtime cannot load; a model that cannot be loaded or is not a
            segmenter of RGB images with one per-pixel output; unusable `thresholds`, `class_names`, `samples` or
            `validation` (not raw pixels, masks that do not match, no images); with target "arm64", a file the
            aarch64 LiteRT fails to run.
        RuntimeMissing: (an InputError, export.arm64) with target "arm64", what the ARM runtime needs and this
            machine lacks: qemu-user, or the aarch64 LiteRT, fetched and unpacked once (python -m export.arm64).
        DatasetError: (an InputError, kerasseg.data.reading) a dataset spec that cannot be read.
        WriteError: (an OSError, kerasseg.errors) the report or its figure could not be written.

    Example:
        ```python
        import export.agreement

        report = export.agreement.check("runs/demo/model.keras", "model_int8.tflite", "shapes", samples=50)
        print(report.passed, report.failed, report.pixel_agreement, report.miou_reference, report.miou_exported)
        # model_int8.report.json holds the same numbers, model_int8.disagreement.png the figure
        ```
    """
    if target not in (None, *arm64.TARGETS):
        raise cli.InputError(f"target={target!r} is not one of {', '.join(arm64.TARGETS)} (or None: this machine)")
    if target and not os.fspath(exported).lower().endswith(".tflite"):
        raise cli.InputError(f"target={target!r} runs .tflite files (the aarch64 LiteRT); {exported} is not one")
    cores = [arm64.check_core(core) and core for core in (cores or arm64.DEFAULT_CORES)] if target else None
    runner = runtimes.open_runner(exported)
    model, policy, name = pipeline.load_model(model)
    fingerprint = fingerprints.of_model(model)  # (of the model itself: a quantization-aware one's, not its twin's)
    if qat.is_quantization_aware(model) and runner.quantization != "int8":
        model, _ = qat.export_twin(model)  # a file without int8 arithmetic is the float twin's (export.formats)
    size = runner.input_size or pipeline.export_size(model)
    pairs, spec, names = values.held_out(validation, samples, size)
    names = names or class_names or pipeline.description(model).class_names or \
        tuple(f"class_{i}" for i in range(pipeline.mask_classes(model.outputs[0].shape[-1])))
    held = values.prepared(pairs, size, names, spec)
    kind = pipeline.output_kind(model)
    foreign = fingerprints.read(exported) is None
    simulated = expected.simulated(model, runner, exported, held, kind) if foreign else None
    path = report or reports.report_path(exported)
    result = reports.agreement_report(model, exported, held, overrides=reports.checked_thresholds(thresholds),
                                      extra={"model": name, "dataset": held.spec, "image_size": list(size),
                                             "training_policy": policy, **(extra or {})},
                                      runner=runner, figure=reports.figure_path(path), fingerprint=fingerprint,
                                      other_weights=other_weights, expected=simulated)
    if target:
        result["targets"], failures = arm64.check_targets(model, exported, held, kind, result["thresholds"], cores)
        result["failed"] += failures
        result["passed"] = not result["failed"]
    reports.write_report(result, path)
    return reports.ExportReport.from_dict(result)


def main(argv=None):
    parser = cli.ArgumentParser(prog="python -m export.agreement", description=__doc__,
                                formatter_class=cli.argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="the Keras model (.keras)")
    parser.add_argument("exported", help="the exported file (.tflite or .onnx)")
    commands.add_arguments(parser)
    parser.add_argument("--report", help="where to write the report (default: beside the exported file)")
    parser.add_argument("--other-weights", action="store_true",
                        help="the file is meant to come from other weights than the model's (e.g. converted by "
                             "someone else from a retrained copy): its fingerprint is reported, not failed")
    parser.add_argument("--target", choices=("arm64",),
                        help="also run the file on emulated ARM cores (the aarch64 LiteRT under qemu-user; the "
                             "runtime is fetched once: python -m export.arm64), held to the same thresholds")
    parser.add_argument("--cores", nargs="+", metavar="CORE",
                        help="with --target arm64: cortex-a53 (no dot-product), cortex-a76 (dot-product), "
                             "neoverse-n2 (i8mm); default cortex-a53 cortex-a76")
    parser.add_argument("--debug", action="store_true",
                        help="int8 .tflite: re-quantize the Keras model the same way with TFLite's "
                             "QuantizationDebugger and write the per-tensor error table (REPORT.debug.csv)")
    args = parser.parse_args(argv)
    if args.cores and not args.target:
        raise UsageError("--cores names ARM cores for --target arm64; give --target arm64 too")
    for core in args.cores or ():
        arm64.check_core(core)  # (before any work)
    data = commands.DataOptions.from_args(args)
    runner = runtimes.open_runner(args.exported)
    stage = resolve.stage(args.model, args.image_size or runner.input_size, args.dataset)
    report_path = args.report or reports.report_path(args.exported)
    validation = stage.data(data.dataset).pairs("test", data.samples or values.DEFAULT_SAMPLES, stage.image_size)
    report = check(stage.file, args.exported, validation, class_names=stage.class_names, samples=data.samples,
                   thresholds=data.overrides, other_weights=args.other_weights, report=report_path,
                   target=args.target, cores=args.cores).to_dict()
    if args.debug:
        if report["quantization"] != "int8" or runner.runtime != "litert":
            raise UsageError(f"--debug reads int8 .tflite files; {args.exported} is {runner.runtime} "
                             f"{report['quantization']}")
        model, _, _ = pipeline.load_model(stage.file)
        calibration = stage.split("train", data.calibration_samples, data.calibration_dataset or data.dataset).images
        csv_path = report_path.removesuffix(".json").removesuffix(".report") + ".debug.csv"
        rows = per_tensor.quantization_debug(model, stage.image_size, calibration, csv_path)
        print(per_tensor.format_offenders(rows))
        report.update(debug_csv=csv_path, flagged_tensors=per_tensor.flagged(rows))
        reports.write_report(report, report_path)
    reports.print_summary(report, args.exported)
    for core, numbers in (report.get("targets") or {}).items():
        print(f"  on {core} ({numbers['cpu']}; emulated, {numbers['seconds']:.0f} s): pixel agreement with Keras "
              f"{numbers['pixel_agreement']:.5f}, with x86 {numbers['agreement_with_x86']:.5f} (outputs differing "
              f"{numbers['outputs_differing_from_x86']:.2%}, by at most {numbers['max_abs_difference_with_x86']:.3g})")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(cli.run(main))
