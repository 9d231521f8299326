"""Export a segmenter to ONNX and check it in ONNX Runtime: `python -m export.onnx`.

    python -m export.onnx MODEL.keras --output FILE.onnx [--opset 17]

Converted by tf2onnx from a fixed batch-1 signature (input "image", float32
pixels in [0, 255], NHWC), run in ONNX Runtime on held-out test samples and
compared with the Keras model; FILE.report.json holds the result.
"""

import sys

from kerasseg import cli
from export import agreement, common

OPSETS = range(13, 19)  # tf2onnx 1.17 converts up to opset 18


def convert(model, image_size, opset=17):
    """The serialised ONNX model of `model` at a fixed batch-1 `image_size`."""
    import tf2onnx

    fn = common.fixed_size_function(model, image_size)
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=fn.input_signature, opset=opset)
    return proto.SerializeToString()


def export(model_path, output, image_size=None, dataset="shapes", samples=50, opset=17, overrides=None):
    """Converts, checks in ONNX Runtime, writes `output` and its report; returns the report."""

    def build(model, size):
        return convert(model, size, opset), {"opset": opset}

    return common.export_checked(model_path, output, build, "float32", image_size, dataset, samples, overrides)


def main(argv=None):
    parser = cli.ArgumentParser(prog="python -m export.onnx", description=__doc__,
                                formatter_class=cli.argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="the trained Keras model (.keras)")
    parser.add_argument("--output", required=True, help="the .onnx file to write")
    parser.add_argument("--opset", type=int, choices=OPSETS, default=17)
    common.add_data_args(parser)
    common.add_threshold_args(parser)
    args = parser.parse_args(argv)
    report = export(args.model, args.output, args.image_size, args.dataset, args.samples, args.opset,
                    common.threshold_overrides(args))
    agreement.print_summary(report, args.output)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(cli.run(main))
