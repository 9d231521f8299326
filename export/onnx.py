"""Export a segmenter to ONNX and check it in ONNX Runtime: `python -m export.onnx`.

    python -m export.onnx MODEL.keras --output FILE.onnx [--opset 17]

Converted by tf2onnx from a fixed batch-1 signature (input "image", float32
pixels in [0, 255], NHWC), run in ONNX Runtime on held-out test samples and
compared with the Keras model; FILE.report.json holds the result.
"""

import sys
import tempfile

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
    common.ensure_writable(output)
    model = common.load_keras_model(model_path)
    size = common.resolve_image_size(model, model_path, image_size)
    held_out = common.load_samples(dataset, "test", size, samples, model)
    print(f"converting {model_path} to ONNX (opset {opset}) at {size[0]}x{size[1]} ...", flush=True)
    serialized = convert(model, size, opset)
    with tempfile.NamedTemporaryFile(suffix=".onnx") as tmp:
        tmp.write(serialized)
        tmp.flush()
        extra = {"model": model_path, "dataset": dataset, "image_size": list(size), "opset": opset}
        report = agreement.agreement_report(model, tmp.name, held_out, "float32", overrides, extra)
    cli.write_bytes_atomic(output, serialized)
    agreement.write_report(report, common.report_path(output))
    return report


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
