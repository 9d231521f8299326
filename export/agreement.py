"""Does the exported model still agree with the Keras one? Measured in the real runtime.

    python -m export.agreement MODEL.keras EXPORTED.{tflite,onnx} [--dataset shapes] [--samples 50]

The exported file runs in the runtime a device uses (the LiteRT interpreter,
ONNX Runtime) on held-out test samples that calibration never saw. Reported:
logit errors, the share of pixels whose predicted class is unchanged, and the
mIoU of both models against the ground truth; FILE.disagreement.png shows the
held-out images where the two disagree most (image | Keras prediction |
exported prediction | the pixels that differ, in red).
"""

import sys

from kerasseg import cli
from kerasseg.cli import UsageError
from export import commands

qat, resolve, per_tensor, pipeline, reports, runtimes = cli.lazy_import(
    "kerasseg.qat", "kerasseg.resolve", "export.per_tensor", "export.pipeline", "export.report", "export.runtimes")


def main(argv=None):
    parser = cli.ArgumentParser(prog="python -m export.agreement", description=__doc__,
                                formatter_class=cli.argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="the Keras model (.keras)")
    parser.add_argument("exported", help="the exported file (.tflite or .onnx)")
    commands.add_arguments(parser)
    parser.add_argument("--report", help="where to write the report (default: beside the exported file)")
    parser.add_argument("--debug", action="store_true",
                        help="int8 .tflite: re-quantize the Keras model the same way with TFLite's "
                             "QuantizationDebugger and write the per-tensor error table (REPORT.debug.csv)")
    args = parser.parse_args(argv)
    data = commands.DataOptions.from_args(args)
    runner = runtimes.open_runner(args.exported)
    stage = resolve.stage(args.model, args.image_size or runner.input_size, args.dataset)
    model, policy, _ = pipeline.load_model(stage.file)
    if qat.is_quantization_aware(model) and runner.quantization != "int8":
        model, _ = qat.export_twin(model)  # a file without int8 arithmetic is the float twin's (export.formats)
    size = stage.image_size
    samples = stage.split("test", args.samples)
    report_path = args.report or reports.report_path(args.exported)
    report = reports.agreement_report(model, args.exported, samples, overrides=data.overrides,
                                      extra={"dataset": samples.spec, "image_size": list(size),
                                             "training_policy": policy},
                                      runner=runner, figure=reports.figure_path(report_path))
    if args.debug:
        if report["quantization"] != "int8" or runner.runtime != "litert":
            raise UsageError(f"--debug reads int8 .tflite files; {args.exported} is {runner.runtime} "
                             f"{report['quantization']}")
        calibration = stage.split("train", data.calibration_samples, data.calibration_dataset or data.dataset).images
        csv_path = report_path.removesuffix(".json").removesuffix(".report") + ".debug.csv"
        rows = per_tensor.quantization_debug(model, size, calibration, csv_path)
        print(per_tensor.format_offenders(rows))
        report.update(debug_csv=csv_path, flagged_tensors=per_tensor.flagged(rows))
    reports.write_report(report, report_path)
    reports.print_summary(report, args.exported)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(cli.run(main))
