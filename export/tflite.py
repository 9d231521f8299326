"""Export a segmenter to TFLite and check it in LiteRT: `python -m export.tflite`.

    python -m export.tflite MODEL.keras --quantize int8 --output FILE.tflite

Modes:
    float32   the graph as it is
    float16   float16 weights (half the size), computed in float32 on CPUs
    dynamic   int8 weights, activations quantized on the fly
    int8      full integer: int8 weights (per channel) and activations, calibrated
              on --calibration-dataset's training split; uint8 input and output,
              so a camera frame goes in as it is (pixels in [0, 255] are exact)

The file is converted with a fixed batch-1 input of --image-size, then run in
the LiteRT interpreter on held-out test samples and compared with the Keras
model; FILE.report.json holds the result. Exit status 1 if a threshold fails.
"""

import sys

import numpy as np

from kerasseg import cli
from kerasseg.cli import UsageError
from export import agreement, common

MODES = ("float32", "float16", "dynamic", "int8")


def convert(model, quantize, image_size, calibration_images=None):
    """The .tflite bytes of `model` at a fixed batch-1 `image_size`."""
    import tensorflow as tf

    frozen = common.frozen_function(model, image_size)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    if quantize != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        if calibration_images is None or len(calibration_images) == 0:
            raise UsageError("int8 quantization needs calibration images; the calibration set is empty")

        def representative():
            for image in calibration_images:
                yield [image[None].astype(np.float32)]

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    return converter.convert()


def export(model_path, output, quantize="int8", image_size=None, dataset="shapes", samples=50,
           calibration_dataset="shapes", calibration_samples=200, overrides=None):
    """Converts, checks in LiteRT, writes `output` and its report; returns the report."""

    def build(model, size):
        if quantize != "int8":
            return convert(model, quantize, size), {}
        calibration = common.load_samples(calibration_dataset, "train", size, calibration_samples, model).images
        extra = {"calibration_dataset": calibration_dataset, "calibration_samples": len(calibration)}
        return convert(model, quantize, size, calibration), extra

    return common.export_checked(model_path, output, build, quantize, image_size, dataset, samples, overrides)


def main(argv=None):
    parser = cli.ArgumentParser(prog="python -m export.tflite", description=__doc__,
                                formatter_class=cli.argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="the trained Keras model (.keras)")
    parser.add_argument("--quantize", choices=MODES, default="int8")
    parser.add_argument("--output", required=True, help="the .tflite file to write")
    parser.add_argument("--calibration-dataset", default="shapes", help="dataset spec for int8 calibration (train split)")
    parser.add_argument("--calibration-samples", type=cli.arg_type(cli.positive_int), default=200)
    common.add_data_args(parser)
    common.add_threshold_args(parser)
    args = parser.parse_args(argv)
    report = export(args.model, args.output, args.quantize, args.image_size, args.dataset, args.samples,
                    args.calibration_dataset, args.calibration_samples, common.threshold_overrides(args))
    agreement.print_summary(report, args.output)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(cli.run(main))
