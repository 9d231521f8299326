"""Export a segmenter to TFLite and check it in LiteRT: `python -m export.tflite`.

    python -m export.tflite MODEL.keras --quantize int8 --output FILE.tflite
    python -m export.tflite MODEL.keras --target edgetpu --output FILE.tflite

Modes:
    float32   the graph as it is
    float16   float16 weights (half the size), computed in float32 on CPUs
    dynamic   int8 weights, activations quantized on the fly
    int16x8   int8 weights, 16-bit activations (TFLite's 16x8 mode, for CPUs and
              NPUs that run it): float32 input and output, calibrated as int8
    int8      full integer: int8 weights (per channel) and activations, calibrated
              on the run's training split (or --calibration-dataset's); input
              and output uint8 by default (--io): the input is always exactly
              scale 1.0, zero point 0 (int8: -128), whatever range the
              calibration images span, so a camera frame goes in as it is

--target edgetpu: int8 with uint8 input and output at a fixed batch-1 size,
refused (exit 2, nothing written) unless the static Edge TPU check
(export.edgetpu) maps every op; `edgetpu_compiler`, when on PATH, then
compiles the file and its log is kept beside it.

--output-kind: logits (default), probabilities (softmax; a binary segmenter's
sigmoid) or category (class indices as int32: the device needs no argmax; it
runs on the CPU, after the Edge TPU's part).

The file is converted with a fixed batch-1 input of --image-size, then run in
the LiteRT interpreter on held-out test samples and compared with the Keras
model; FILE.report.json holds the result. Exit status 1 if a threshold fails.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import TYPE_CHECKING

import numpy as np

from kerasseg import cli, files
from kerasseg.choices import PERCENTILE
from kerasseg.errors import InputError

from export import ai_edge, formats, runtimes
from export.converter import CALIBRATIONS, check_pixel_input, convert, convert_with_learned  # noqa: F401 (convert: public here)

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    import keras

    from export.report import ExportReport

qat, edgetpu, pipeline, reports = cli.lazy_import("kerasseg.qat", "export.edgetpu", "export.pipeline",
                                                 "export.report")

MODES = ("float32", "float16", "dynamic", "int8", "int16x8")
OUTPUT_KINDS = ("logits", "probabilities", "category")  # (export.pipeline.with_output_kind)
CALIBRATED = ("int8", "int16x8")
IO_TYPES = ("uint8", "int8", "float32")
QUANTIZERS = ("kerasseg", "ai-edge")


@dataclasses.dataclass(frozen=True)
class TFLiteOptions(formats.Options):
    """export.tflite.export's own options (see its Args), typed."""

    quantize: str = "int8"
    io: str = "uint8"
    target: str | None = None
    output_kind: str = "logits"
    calibration_method: str = "minmax"
    debug: bool = False
    keep_float: tuple = ()
    auto_keep_float: bool = False
    tuning: object = None  # the images auto_keep_float tunes on (default: the held-out ones)
    quantizer: str = "kerasseg"
    ai_edge_algorithm: str = "min_max"

    @property
    def keeps(self) -> bool:
        """Whether layers are kept in float (named, or found)."""
        return bool(self.keep_float or self.auto_keep_float)


def _check(options):
    """The options no file can be made with, refused before any work."""
    o = TFLiteOptions.of(options)
    quantize, keep = o.quantize, o.keeps
    if quantize not in MODES:
        raise InputError(f"quantize must be one of {MODES}; received {quantize!r}")
    if o.target == "edgetpu":
        if quantize != "int8" or o.io != "uint8":
            raise InputError(f"target edgetpu needs int8 quantization with uint8 input and output; received "
                             f"quantize={quantize!r}, io={o.io!r}")
        if keep:
            raise InputError("keeping layers in float splits the graph into int8 and float parts, and the Edge TPU "
                             "runs only the first part: not allowed with target edgetpu")
    if (o.debug or keep) and quantize != "int8":
        raise InputError(f"the per-tensor error table and keeping layers in float apply to int8, not {quantize}")
    if o.quantizer not in QUANTIZERS:
        raise InputError(f"quantizer must be one of {QUANTIZERS}; received {o.quantizer!r}")
    if o.io not in IO_TYPES:
        raise InputError(f"io={o.io!r} is not one of {', '.join(IO_TYPES)}")
    if o.quantizer == "ai-edge":
        if quantize not in CALIBRATED:
            raise InputError(f"quantizer 'ai-edge' makes int8 or int16x8 files (ai-edge-quantizer's static recipes); "
                             f"received quantize={quantize!r}")
        if o.io == "float32" or keep or o.debug:
            raise InputError("quantizer 'ai-edge' quantizes the whole file, its input and output too: io 'float32', "
                             "the per-tensor error table and keeping layers in float are kerasseg's quantizer's")
        if o.calibration_method == "percentile":
            raise InputError("quantizer 'ai-edge' calibrates with 'minmax' or 'moving-average'; received calibration "
                             "'percentile' (kerasseg's quantizer's)")
        if o.ai_edge_algorithm not in ai_edge.ALGORITHMS:
            raise InputError(f"ai_edge_algorithm must be one of {', '.join(ai_edge.ALGORITHMS)}; received "
                             f"{o.ai_edge_algorithm!r}")
    elif o.calibration_method == "moving-average" or o.ai_edge_algorithm != "min_max":
        what = "calibration 'moving-average'" if o.calibration_method == "moving-average" else \
            f"ai_edge_algorithm {o.ai_edge_algorithm!r}"
        raise InputError(f"{what} is ai-edge-quantizer's: it applies with quantizer 'ai-edge' only")
    elif o.calibration_method != "minmax" and (quantize != "int8" or keep):
        raise InputError(f"calibration {o.calibration_method!r} applies to plain int8 (not {quantize}, nor "
                         "with layers kept in float)")


def _convert_file(model, size, found, options):
    """(the .tflite bytes, extra report fields) of the float32 `model` (formats.Format.convert)."""
    o = TFLiteOptions.of(options)
    quantize, keep = o.quantize, o.keeps
    calibration, extra = found.calibration, {}
    if quantize in CALIBRATED:
        io = o.io if quantize == "int8" else "int16" if o.quantizer == "ai-edge" else "float32"
        extra.update(calibration_dataset=found.calibration_spec, calibration_samples=len(calibration), io=io,
                     calibration_method=o.calibration_method, quantizer=o.quantizer)
    if qat.is_quantization_aware(model) and (o.debug or keep or o.calibration_method != "minmax"
                                             or o.quantizer != "kerasseg"):
        raise InputError(f"{found.name} is quantization-aware: its int8 ranges are learned, so the per-tensor "
                         "error table, keeping layers in float, percentile calibration and ai-edge-quantizer, which "
                         "recalibrate, do not apply; export it to plain int8")
    content = None
    if o.quantizer == "ai-edge":
        recipe = "static_wi8_ai8" if quantize == "int8" else "static_wi8_ai16"
        content = ai_edge.quantize(convert(model, "float32", size), calibration, recipe,
                                   o.ai_edge_algorithm, o.calibration_method,
                                   o.io)
        check_pixel_input(content)
        extra.update(ai_edge_recipe=recipe, ai_edge_algorithm=o.ai_edge_algorithm)
    elif o.debug or keep:
        from export import per_tensor

        content, found_extra = per_tensor.int8_keeping_float(
            model, size, calibration, output=o.output, debug=o.debug,
            keep_float=o.keep_float, auto_keep_float=o.auto_keep_float, tuning=o.tuning,
            class_names=found.held_out.class_names, samples=o.samples, thresholds=o.thresholds)
        extra.update(found_extra)
    if content is None:
        content, learned = convert_with_learned(model, quantize, size, calibration, o.io, o.calibration_method)
        if learned is not None:
            extra["learned_ranges"] = learned
            print(f"learned ranges: {learned['written']} of {learned['simulated']} written into the file "
                  f"({learned['fixed']} fixed-scale outputs; calibration set {len(learned['calibrated'])}: "
                  f"{', '.join(learned['calibrated'][:4]) or 'none'}"
                  f"{', ...' if len(learned['calibrated']) > 4 else ''})", flush=True)
    if o.target == "edgetpu":
        extra["edgetpu"] = edgetpu.require_mapped(content, o.output)
    extra["signature"] = pipeline.signature_of(content)  # (None: the converter could not save the model)
    return content, extra


def _compiled(report, output, options):
    """The report amended by edgetpu_compiler's verdict (target edgetpu, the compiler on PATH)."""
    if TFLiteOptions.of(options).target != "edgetpu":
        return report
    compiled = report["edgetpu"]["compiler"] = edgetpu.compile_file(output)
    if isinstance(compiled, dict) and not compiled["fully_mapped"]:
        cpu = [f"{op['op']} x{op['count']}: {op['status']}" for op in compiled["operators"] if not op["mapped"]]
        report["failed"].append("edgetpu_compiler: " + (compiled["error"] or f"{compiled['cpu_operators']} "
                                f"operators run on the CPU ({'; '.join(cpu) or 'see ' + compiled['log']})"))
        report["passed"] = False
    reports.write_report(report, reports.report_path(output))
    return report


def _add_options(parser):
    parser.add_argument("--quantize", choices=MODES, default="int8",
                        help="how the file is quantized (default int8; see Modes above)")
    parser.add_argument("--io", choices=IO_TYPES, default="uint8", help="int8 input/output type (default: uint8)")
    parser.add_argument("--calibration", choices=CALIBRATIONS, default="minmax",
                        help=f"int8 activation ranges: min/max over the calibration images (default), or their "
                             f"{PERCENTILE}th percentiles; moving-average: ai-edge-quantizer's own (each image's "
                             "min/max averaged in, the first weighing most)")
    parser.add_argument("--quantizer", choices=QUANTIZERS, default="kerasseg",
                        help="int8 / int16x8: kerasseg's quantization through TFLite's converter (default), or "
                             "Google's ai-edge-quantizer applied to the float32 file (static_wi8_ai8 / "
                             "static_wi8_ai16; benchmarks/RESULTS.md compares them), checked the same way")
    parser.add_argument("--ai-edge-algorithm", choices=ai_edge.ALGORITHMS, default="min_max",
                        help="--quantizer ai-edge: how the convolutions' weights are quantized (default min_max)")
    parser.add_argument("--target", choices=("edgetpu",), help="edgetpu: int8, uint8 I/O, every op mapped")
    parser.add_argument("--output-kind", choices=OUTPUT_KINDS, default="logits",
                        help="what the file outputs: logits (default), probabilities (softmax; one channel: "
                             "sigmoid) or category (class indices as int32)")
    parser.add_argument("--debug", action="store_true",
                        help="int8: per-tensor quantization error table (FILE.debug.csv) and the top offenders")
    parser.add_argument("--keep-float", nargs="+", default=(), metavar="LAYER",
                        help="int8: leave these Keras layers' ops in float")
    parser.add_argument("--auto-keep-float", action="store_true",
                        help="int8: keep the worst tensors in float until the thresholds pass (validation split)")


def _options_from(args):
    return {"quantize": args.quantize, "io": args.io, "calibration_method": args.calibration, "target": args.target,
            "output_kind": args.output_kind, "debug": args.debug, "keep_float": args.keep_float,
            "auto_keep_float": args.auto_keep_float,
            "tuning": formats.VALIDATION_SPLIT if args.auto_keep_float else None,
            "quantizer": args.quantizer, "ai_edge_algorithm": args.ai_edge_algorithm}


def _advice(args, report):
    if args.quantize == "int8" and not report.get("quantization_aware") and args.quantizer == "kerasseg":
        return int8_remedies(args.model, args.calibration, args.target, args.keep_float or args.auto_keep_float)
    return None


FORMAT = formats.register(formats.Format(
    name="tflite", suffix=".tflite", module="export.tflite", convert=_convert_file, runner=runtimes.LiteRTRunner,
    quantization=lambda options: options["quantize"], integer=lambda options: options["quantize"] == "int8",
    calibrates=lambda options, model: options["quantize"] in CALIBRATED, check=_check, add_options=_add_options,
    options_from=_options_from, after=_compiled, advice=_advice, defaults=TFLiteOptions.defaults()))


def export(model: keras.Model | str | os.PathLike | files.ModelFile, output: str | os.PathLike, *,
           quantize: str = "int8", calibration: np.ndarray | tuple | Iterable | str | None = None,
           validation: np.ndarray | tuple | Iterable | str | None = None, class_names: Sequence[str] | None = None,
           input_normalization: float | Sequence[float] | None = None,
           image_size: int | tuple[int, int] | None = None, samples: int | str | None = None,
           calibration_samples: int | str | None = None, thresholds: dict[str, float] | None = None,
           io: str = "uint8", target: str | None = None, output_kind: str = "logits",
           calibration_method: str = "minmax", debug: bool = False, keep_float: Sequence[str] = (),
           auto_keep_float: bool = False, tuning: np.ndarray | tuple | Iterable | str | None = None,
           quantizer: str = "kerasseg", ai_edge_algorithm: str = "min_max", latency: bool = False) -> ExportReport:
    """Converts a segmenter to a .tflite file, checks the file in LiteRT against the model, and writes both.

    The model is converted at a fixed batch-1 input of `image_size`, the file run in the LiteRT interpreter on
    held-out samples and compared with the Keras model; only then are `output` and its report, FILE.report.json,
    written (atomically: a failed conversion or check leaves whatever was there before untouched). A file that
    fails its thresholds is still written: its report says what failed. Under another Keras backend than
    TensorFlow (JAX) the export runs in a TensorFlow child process (export.backend) and returns the same report.

    Args:
        model: the segmenter: a keras.Model, the path of its .keras file, or a kerasseg.files.ModelFile (a model
            already loaded from its file). A mixed-precision model is exported as its float32 rebuild; a
            quantization-aware one (kerasseg.qat) converts as its float twin, and int8 writes the ranges it learned
            into the file (export.ranges) instead of calibrated ones.
        output: the .tflite file to write; its report goes beside it, FILE.report.json (with FILE.disagreement.png,
            the held-out images where the file and the model disagree most).
        quantize: how the file is quantized: "float32" (the graph as it is), "float16" (float16 weights, half the
            size, computed in float32 on CPUs), "dynamic" (int8 weights, activations quantized on the fly),
            "int16x8" (int8 weights, 16-bit activations: TFLite's 16x8 mode, for CPUs and NPUs that run it; float32
            input and output, calibrated as int8) or "int8" (the default: full integer, int8 weights per channel
            and activations, calibrated on `calibration`; input and output types by `io`).
        calibration: the training images int8 and int16x8 are calibrated on (required for those modes), the
            first `calibration_samples` of them: raw RGB pixels in [0, 255] as (N, H, W, 3) images, (images,
            masks), a tf.data.Dataset, an iterable of images or of (image, mask) pairs, a kerasseg.data.Split, or
            a dataset spec (its training split; kerasseg.data.values). Without `validation`, the file is checked
            on these images (the report says so).
        validation: the held-out samples the file is compared on, the first `samples` of them, in the same forms
            as `calibration` (a dataset spec: its test split): (images, masks) for the mIoU too, images alone for
            the agreement without the mIoU (pixels and logits). Each is stretched to the file's input size, as
            an app feeding the file whole frames stretches them, and scored at its own size.
        class_names: the per-class IoU's names, one per class (a binary segmenter: two, background's and the
            foreground's). Default: the model's own (kerasseg.describe); else the validation dataset's; else
            class_0, class_1, ...
        input_normalization: what a model that does not take raw pixels expects of them, prepended to it so that
            the file takes pixels in [0, 255] (pipeline.taking_pixels): a scale (`x * scale`), or (mean, std),
            each a number or one per RGB channel (`(x - mean) / std`). Default: the input range the model carries
            (kerasseg.describe), if any other than pixels; else none.
        image_size: (height, width), or N for N x N, to export at. Default: the model's fixed input size, else
            the training size it carries (at the aspect most held-out images share when it was trained with its
            aspect kept), else the size of the images given. A model with a fixed input size takes only that.
        samples: how many held-out samples (of `validation`, and of `tuning`) are compared: a positive integer
            or "all"; default 50.
        calibration_samples: how many calibration images are used: a positive integer or "all"; default 200.
        thresholds: {name: value} replacing the mode's defaults (report.DEFAULT_THRESHOLDS), names among
            "pixel_agreement", "max_abs_error", "mean_abs_error" and "miou_drop" (in mIoU points). Default: the
            mode's (int8: pixel agreement 0.99 and an mIoU drop of at most 1 point).
        io: int8's input and output type: "uint8" (the default), "int8" or "float32". The input is always exactly
            scale 1.0, zero point 0 (int8: -128), whatever range the calibration images span, so a camera frame
            goes in as it is; a class-index output (output_kind "category") stays int32. Other modes take and give
            float32 (int16x8 by quantizer "ai-edge": int16), as does an int8 file with layers kept in float.
        target: None (the default), or "edgetpu": int8 with uint8 input and output at a fixed batch-1 size,
            refused (nothing written) unless the static Edge TPU check (export.edgetpu) maps every op; the report's
            "edgetpu" holds the check. `edgetpu_compiler`, when on PATH, then compiles the file
            (FILE_edgetpu.tflite, its log kept beside it), and operators it leaves on the CPU fail the report.
        output_kind: what the file outputs: "logits" (the default: the model's own output), "probabilities"
            (softmax; a binary segmenter's sigmoid) or "category" (class indices as int32: the device needs no
            argmax; with target "edgetpu" it runs on the CPU, after the Edge TPU's part).
        calibration_method: int8 activation ranges: "minmax" (the default: each activation's min/max over the
            calibration images, TFLite's own), "percentile" (the 99.99th percentiles of its values, PERCENTILE, which
            clip rare outliers for a finer step everywhere else; plain int8 only, not with layers
            kept in float) or "moving-average" (ai-edge-quantizer's own: each image's min/max averaged in, the first
            weighing most; quantizer "ai-edge" only). A quantization-aware model takes "minmax" only: its ranges
            are the ones it learned.
        debug: int8 only: also write the per-tensor quantization error table (FILE.debug.csv) and print the top
            offenders (default False).
        keep_float: int8 only: names of Keras layers whose ops stay in float (default none); the split graph then
            takes and returns float32. Not with target "edgetpu" (the Edge TPU runs only the first, int8 part of
            a split graph) nor with quantizer "ai-edge".
        auto_keep_float: int8 only: keep the 1, 2, 4, 8, then 16 worst tensors in float until the thresholds
            pass on `tuning` (default False; refused where the all-int8 file already passes there: such samples
            cannot choose); same restrictions as `keep_float`.
        tuning: the samples `auto_keep_float` chooses on, in the same forms as `validation` (the first `samples`
            of them). Default: the calibration images. The command line passes the validation split.
        quantizer: "kerasseg" (the default: kerasseg's quantization through TFLite's converter) or "ai-edge":
            int8 / int16x8 by Google's ai-edge-quantizer (export.ai_edge: its static_wi8_ai8 / static_wi8_ai16
            recipe applied to the float32 file), with the same input convention and the same check; io "uint8" or
            "int8" only, and neither `debug`, `keep_float` nor `auto_keep_float`. benchmarks/RESULTS.md compares
            the two.
        ai_edge_algorithm: quantizer "ai-edge" only: how the convolutions' weights are quantized: "min_max" (the
            default), "mse" or "octav".
        latency: time the file and the model (batch 1, 20 runs each) for the report's latency_ms and
            keras_latency_ms (default False: not measured, None).

    Returns:
        The ExportReport (export.report) of the check, also written to FILE.report.json beside `output`
        (`os.path.splitext(output)[0] + ".report.json"`; `report.to_dict()` is its content): `passed` (every
        threshold held), `failed` (the thresholds that failed, as "pixel_agreement 0.97 < 0.99"),
        `pixel_agreement` (the share of pixels whose predicted class the file and the model agree on),
        `miou_reference` and `miou_exported` (the model's and the file's mIoU on the held-out masks; None without
        masks) and `miou_drop`, `max_abs_error`, `latency_ms`, `size_bytes`; `report["key"]` reads the rest
        (e.g. "thresholds", "disagreement_png", "edgetpu", "learned_ranges", "kept_float", "debug_csv").

    Raises:
        InputError: (a ValueError, kerasseg.errors) options no file can be made with, most refused before any work: an
            unknown `quantize`, `quantizer`, `io`, `calibration_method` or `ai_edge_algorithm`; target "edgetpu"
            without int8 and uint8 I/O or with layers kept in float; `debug` / `keep_float` / `auto_keep_float`
            outside int8;
            quantizer "ai-edge" outside int8 / int16x8, or with io "float32", `debug`, kept layers or "percentile";
            "moving-average" or another `ai_edge_algorithm` than "min_max" without quantizer "ai-edge"; "percentile"
            outside plain int8. Then: a model that cannot be loaded or is not a segmenter of RGB images with one
            per-pixel output; a quantization-aware model with `debug`, kept layers, another calibration than "minmax" or
            quantizer "ai-edge"; unusable `thresholds`, `class_names`, `input_normalization`, `image_size`, `samples` or
            data (not raw pixels, masks that do not match, no calibration images for int8 / int16x8, nothing to check
            the file on); an `output` that cannot be written; with target "edgetpu", a model the Edge TPU does not map
            entirely; a `keep_float` layer with no quantized tensor; `auto_keep_float` still failing with 16 tensors
            kept; ai-edge-quantizer not installed; an int8 file whose integer input is not raw pixels. Under another
            backend, the child's InputError is raised as it is.
        DatasetError: (an InputError, kerasseg.data.reading) a dataset spec that cannot be read.
        WriteError: (an OSError, kerasseg.errors) the file or its report could not be written (disk full, ...).
        RuntimeError: under another backend, the TensorFlow child process ended without a report.

    Example:
        ```python
        import export.tflite

        report = export.tflite.export("runs/demo/model.keras", "model_int8.tflite", quantize="int8",
                                      calibration="shapes", validation="shapes")
        print(report.passed, report.pixel_agreement, report.miou_reference, report.miou_exported)
        # model_int8.report.json holds the same numbers; report.failed says what failed
        ```
    """
    return formats.export(FORMAT, **locals())


def main(argv=None):
    return formats.main(FORMAT, argv, __doc__)


def int8_remedies(model, calibration, target, kept_float):
    """What else recovers what post-training int8 lost, worded for this command (benchmarks/RESULTS.md
    measures each)."""
    tried = ["--calibration percentile (narrower ranges: a finer step for all but rare outliers)"
             if calibration == "minmax" else None,
             "--auto-keep-float (the worst tensors stay in float)" if target is None and not kept_float else None,
             f"quantization-aware fine-tuning (python -m kerasseg.train --init-from {model} --quantization-aware "
             "--epochs 2 --output DIR ..., then export DIR/model.keras)"]
    return "what recovers post-training int8 losses (benchmarks/RESULTS.md): " + "; ".join(filter(None, tried))


if __name__ == "__main__":
    sys.exit(cli.run(main))
