"""Will a .tflite run entirely on a Coral Edge TPU? `python -m export.edgetpu FILE.tflite`

A static check of every operator against Coral's published operation table
and its constraints, without the compiler (which only runs on x86-64 Linux
and has not been updated since 2021):

- every activation tensor 8-bit (uint8/int8) and of constant shape, weights
  and biases constant, only the 3 innermost dimensions larger than 1 (so
  batch 1);
- the operator in Coral's table, at an op version the last compiler
  (16.0) accepts, and within the operator's own limits (no fused activation
  on pooling or concatenation, equal x/y dilation, reductions and padding
  off the batch axis, strides of 1 in a strided slice, 1-D softmax, resize
  without TF2's half-pixel centres, ...).

The Edge TPU runs one contiguous block of the graph: from the first
operator that does not map, everything after it falls back to the CPU. The
report lists each operator, mapped or why not, the index of that first
CPU operator and the share of operators the Edge TPU runs. Exit status 1
unless all of them map. export.tflite's target edgetpu refuses a file that
does not map (`require_mapped`) and compiles it where edgetpu_compiler is on
PATH (`compile_file`).
"""

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

from kerasseg import cli, files
from kerasseg.errors import InputError

# Coral's operation table (coral.ai/docs/edgetpu/models-intro, compiler 16.0) with the highest op
# version of each that compiler accepts. Compiler 16 reads the TFLite schema of TensorFlow 2.5:
# the versions are the last ones tensorflow/lite/tools/versioning/runtime_version.cc dates to 2.5.0
# or earlier (e.g. ADD 4 needs 2.6).
MAX_VERSION = {
    "ADD": 3, "AVERAGE_POOL_2D": 3, "CONCATENATION": 3, "CONV_2D": 5, "DEPTHWISE_CONV_2D": 6, "EXPAND_DIMS": 1,
    "FULLY_CONNECTED": 9, "L2_NORMALIZATION": 2, "LOGISTIC": 3, "LSTM": 4, "MAXIMUM": 4, "MAX_POOL_2D": 3,
    "MEAN": 3, "MINIMUM": 4, "MUL": 4, "PACK": 3, "PAD": 3, "PRELU": 1, "QUANTIZE": 2, "REDUCE_MAX": 3,
    "REDUCE_MIN": 3, "RELU": 3, "RELU6": 3, "RELU_N1_TO_1": 1, "RESHAPE": 1, "RESIZE_BILINEAR": 4,
    "RESIZE_NEAREST_NEIGHBOR": 4, "RSQRT": 2, "SLICE": 5, "SOFTMAX": 3, "SPACE_TO_DEPTH": 2, "SPLIT": 4,
    "SQUARED_DIFFERENCE": 2, "SQUEEZE": 2, "STRIDED_SLICE": 5, "SUB": 5, "SUM": 2, "TANH": 3, "TRANSPOSE": 5,
    "TRANSPOSE_CONV": 3,
}
EIGHT_BIT = ("UINT8", "INT8")
# the Edge TPU's on-chip memory (coral.ai/docs/edgetpu/compiler, "parameter data caching"): Coral's table says
# "certain reshapes might not be mapped for large tensor sizes"; one that cannot even fit there is flagged
ON_CHIP_BYTES = 8 * 2**20
# constant operands that are not weights (shapes, axes, paddings, sizes) may be 32/64-bit integers
INTEGER_CONSTANTS = ("INT32", "INT64")


class _Graph:
    """The operators and tensors of a .tflite file's main subgraph, with readable names."""

    def __init__(self, path):
        from export import internals

        schema = internals.tflite_schema()
        try:
            with open(path, "rb") as f:
                content = f.read()
            if content[4:8] != b"TFL3":
                raise ValueError("no TFL3 identifier")
            self.model = internals.read_tflite(content)
            self.content = content
        except Exception as error:
            raise InputError(f"{path} is not a TFLite model ({type(error).__name__}: {error})") from None
        if len(self.model.subgraphs) != 1:
            self.extra_subgraphs = len(self.model.subgraphs) - 1
        else:
            self.extra_subgraphs = 0
        self.graph = self.model.subgraphs[0]
        self.op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        self.type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
        self.padding_names = {v: k for k, v in vars(schema.Padding).items() if not k.startswith("_")}

    def op_name(self, op):
        code = self.model.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        if self.op_names.get(builtin) == "CUSTOM":
            return f"CUSTOM({code.customCode.decode() if code.customCode else '?'})", code.version
        return self.op_names.get(builtin, f"BUILTIN_{builtin}"), code.version

    def tensor(self, index):
        tensor = self.graph.tensors[index]
        buffer = self.model.buffers[tensor.buffer]
        data = buffer.data
        if (data is None or len(data) == 0) and buffer.offset > 1 and buffer.size > 0:
            data = self.content[buffer.offset:buffer.offset + buffer.size]  # (stored after the flatbuffer)
        constant = data is not None and len(data) > 0
        signature = tensor.shapeSignature if tensor.shapeSignature is not None else tensor.shape
        return {
            "name": tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name),
            "type": self.type_names.get(tensor.type, str(tensor.type)),
            "shape": [int(s) for s in (tensor.shape if tensor.shape is not None else [])],
            "dynamic": any(int(s) < 0 for s in (signature if signature is not None else [])),
            "constant": constant,
            "values": _constant_values(data, self.type_names.get(tensor.type)) if constant else None,
            "zero_point": int(tensor.quantization.zeroPoint[0]) if tensor.quantization is not None
            and tensor.quantization.zeroPoint is not None and len(tensor.quantization.zeroPoint) else 0,
            "data": data if constant else None,
        }


def _constant_values(data, type_name):
    import numpy as np

    dtype = {"INT32": np.int32, "INT64": np.int64}.get(type_name)
    return np.frombuffer(bytes(data), dtype).tolist() if dtype else None


def _all_zero(tensor):
    """Whether a constant tensor holds only (quantized) zeros."""
    import numpy as np

    dtype = {"INT8": np.int8, "UINT8": np.uint8, "INT32": np.int32, "FLOAT32": np.float32}.get(tensor["type"])
    return dtype is not None and bool((np.asarray(tensor["data"], np.uint8).view(dtype) == tensor["zero_point"]).all())


def _fused_activation(options):
    return getattr(options, "fusedActivationFunction", 0) not in (0, None)


def _axes(inputs):
    axes = inputs[1]["values"] if len(inputs) > 1 else None
    if axes is None:
        return None
    rank = len(inputs[0]["shape"])
    return sorted(a % rank for a in axes)


def _op_limits(name, options, inputs, outputs):
    """Why Coral's table does not map this operator with these operands, or None."""
    if name in ("AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION") and _fused_activation(options):
        return "a fused activation function is not supported on this op"
    if name == "CONCATENATION":
        constants = [t for t in inputs if t["constant"]]
        if constants and len(inputs) != 2:
            return "a compile-time constant input is only allowed with exactly 2 inputs (zero padding)"
        if any(not _all_zero(t) for t in constants):
            return "a compile-time constant input must be all zeros (a zero padding)"
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        if getattr(options, "dilationHFactor", 1) != getattr(options, "dilationWFactor", 1):
            return "dilation must be the same in x and y"
    if name in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN"):
        axes = _axes(inputs)
        if axes is None:
            return "the reduction axes must be constant"
        if 0 in axes:
            return "no reduction over the batch dimension"
        if name == "MEAN" and len(inputs[0]["shape"]) == 4 and 3 in axes and inputs[0]["shape"][3] % 4:
            return "a reduction over channels needs a multiple of 4 channels"
    if name == "PAD":
        paddings = inputs[1]["values"] if len(inputs) > 1 else None
        if paddings is None:
            return "the paddings must be constant"
        if any(paddings[:2]):
            return "no padding in the batch dimension"
    if name == "PACK" and getattr(options, "axis", 0) == 0:
        return "no packing in the batch dimension"
    if name == "STRIDED_SLICE":
        strides = inputs[3]["values"] if len(inputs) > 3 else None
        if strides is None or any(s != 1 for s in strides):
            return "all strides must be 1 (a plain slice)"
        if getattr(options, "ellipsisMask", 0) or getattr(options, "newAxisMask", 0):
            return "ellipsis and new-axis masks are not supported"
    if name == "SOFTMAX":
        shape = inputs[0]["shape"]
        if sum(s > 1 for s in shape) > 1 or max(shape, default=0) > 16000:
            return "only a 1-D input of at most 16,000 elements is supported (per-pixel softmax runs on the CPU)"
    if name in ("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR") and getattr(options, "halfPixelCenters", False):
        return ("half_pixel_centers=True (TensorFlow 2's resize) is the op version the Edge TPU compilers "
                "reject ('Operation version not supported'); upsample with a transposed convolution or "
                "build the model with edge=True")
    if name == "FULLY_CONNECTED":
        if getattr(options, "weightsFormat", 0) != 0:
            return "only the default weights format is supported"
        if sum(s > 1 for s in outputs[0]["shape"]) > 1:
            return f"the output must be one-dimensional; it is {outputs[0]['shape']}"
    if name == "PRELU" and sum(s > 1 for s in inputs[1]["shape"][:-1]):
        return (f"alpha must be 1-D (only its innermost dimension > 1); it is {inputs[1]['shape']}: "
                "use Keras PReLU(shared_axes=[1, 2])")
    return None


def _resize_problem(name, inputs, outputs):
    """RESIZE_*: Coral maps only a 3-D image (height, width, channels) in and out: batch 1."""
    if name in ("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"):
        for tensor in (inputs[0], outputs[0]):
            if len(tensor["shape"]) != 4 or tensor["shape"][0] != 1:
                return f"input and output must be one 3-D image (batch 1); {tensor['name']!r} is {tensor['shape']}"
    return None


def _tensor_problems(inputs, outputs):
    for role, tensors in (("input", inputs), ("output", outputs)):
        for tensor in tensors:
            if tensor["dynamic"]:
                return f"{role} {tensor['name']!r} has a dynamic shape {tensor['shape']}; export with a fixed size"
            if tensor["constant"]:
                if tensor["type"] not in EIGHT_BIT + INTEGER_CONSTANTS:
                    return f"constant {tensor['name']!r} is {tensor['type']}; the model is not fully integer"
                continue
            if tensor["type"] not in EIGHT_BIT:
                return f"{role} {tensor['name']!r} is {tensor['type']}; only 8-bit (uint8/int8) tensors map"
            if any(s != 1 for s in tensor["shape"][:-3]):
                return (f"{role} {tensor['name']!r} {tensor['shape']}: only the 3 innermost dimensions may be "
                        "larger than 1")
    return None


def analyse(path):
    """The op-by-op report of `path` (a dict; see the module docstring)."""
    graph = _Graph(path)
    ops = []
    for index, op in enumerate(graph.graph.operators):
        name, version = graph.op_name(op)
        inputs = [graph.tensor(i) for i in op.inputs if i >= 0]
        outputs = [graph.tensor(i) for i in op.outputs if i >= 0]
        if name not in MAX_VERSION:
            reason = "not in the Edge TPU's operation table"
        elif version > MAX_VERSION[name]:
            reason = f"op version {version} is newer than the last compiler accepts ({MAX_VERSION[name]})"
        else:
            reason = (_resize_problem(name, inputs, outputs) or _tensor_problems(inputs, outputs)
                      or _op_limits(name, op.builtinOptions, inputs, outputs))
        ops.append({"index": index, "op": name, "version": version, "output": outputs[0]["name"] if outputs else "",
                    "output_shape": outputs[0]["shape"] if outputs else [], "mapped": reason is None,
                    "reason": reason or ""})
    reshapes = sorted(((op["index"], op["output_shape"]) for op in ops if op["op"] == "RESHAPE"),
                      key=lambda item: -math.prod(item[1]))
    warnings = [f"RESHAPE op {index} writes {shape} ({math.prod(shape) / 2**20:.1f} MiB), more than the "
                f"{ON_CHIP_BYTES // 2**20} MiB of on-chip memory: Coral's table says large reshapes may not map"
                for index, shape in reshapes if math.prod(shape) > ON_CHIP_BYTES]
    outside = sum(buffer.offset > 1 and buffer.size > 0 for buffer in graph.model.buffers)
    if outside:  # (the schema of TensorFlow 2.5 has no Buffer.offset: the compiler would read them as empty)
        warnings.append(f"{outside} constant buffers are stored after the flatbuffer (Buffer.offset: TFLite's "
                        "format for files over 2 GB, newer than the schema edgetpu_compiler 16 reads, which "
                        "would see them empty): not compilable as it is")
    first_cpu = next((op["index"] for op in ops if not op["mapped"]), None)
    edge_ops = len(ops) if first_cpu is None else first_cpu
    io = [graph.tensor(i) for i in list(graph.graph.inputs) + list(graph.graph.outputs)]
    return {
        "file": os.fspath(path),
        "check": "static (Coral's operation table; edgetpu_compiler not run)",
        "operators": len(ops),
        "edge_tpu_operators": edge_ops,
        "mapped_share": edge_ops / len(ops) if ops else 0.0,
        "first_cpu_op": first_cpu,
        "fully_mapped": first_cpu is None and bool(ops) and not graph.extra_subgraphs and not outside,
        "buffers_outside": outside,
        "io": [{"name": t["name"], "type": t["type"], "shape": t["shape"]} for t in io],
        "largest_reshape_bytes": math.prod(reshapes[0][1]) if reshapes else 0,
        "warnings": warnings,
        "ops": ops,
    }


_COUNTS = {"total_operators": "Total number of operations", "edge_tpu_operators": "Number of operations that will run "
           "on Edge TPU", "cpu_operators": "Number of operations that will run on CPU",
           "subgraphs": "Number of Edge TPU subgraphs"}


def parse_compiler_log(text):
    """What edgetpu_compiler (-s) printed: whether it compiled, its operator counts and its per-op table.

    Compiler 16 prints "Total number of operations: N", and when some fall to
    the CPU "Number of operations that will run on Edge TPU / on CPU: N";
    with -s a table of "OPERATOR  COUNT  STATUS" rows. A failed compilation
    prints "Compilation failed: ..." (large activation tensors, internal errors).
    """
    import re

    parsed = {"compiled": "compiled successfully" in text, "error": None, "operators": []}
    failure = re.search(r"^.*Compilation failed.*$", text, re.MULTILINE)
    if failure:
        parsed["compiled"], parsed["error"] = False, failure.group(0).strip()
    for key, label in _COUNTS.items():
        match = re.search(rf"^{label}:\s*(\d+)", text, re.MULTILINE)
        parsed[key] = int(match.group(1)) if match else None
    for match in re.finditer(r"^([A-Z][A-Z0-9_]+)\s+(\d+)\s+(\S.*?)\s*$", text, re.MULTILINE):
        name, count, status = match.groups()
        parsed["operators"].append({"op": name, "count": int(count), "status": status,
                                    "mapped": status.startswith("Mapped to Edge TPU")})
    if parsed["compiled"] and parsed["cpu_operators"] is None and parsed["total_operators"] is not None:
        parsed["edge_tpu_operators"], parsed["cpu_operators"] = parsed["total_operators"], 0  # all of them mapped
    parsed["fully_mapped"] = parsed["compiled"] and parsed["cpu_operators"] == 0
    return parsed


def format_report(report, limit=None):
    lines = []
    for op in report["ops"]:
        if report["first_cpu_op"] is not None and op["index"] >= report["first_cpu_op"] and op["mapped"]:
            status = "CPU (after the first CPU op)"
        else:
            status = "Edge TPU" if op["mapped"] else f"CPU: {op['reason']}"
        lines.append(f"{op['index']:4d}  {op['op']:<24} v{op['version']:<2} {str(op['output_shape']):<20} {status}")
    if limit is not None and len(lines) > limit:
        lines = lines[:limit] + [f"  ... {len(lines) - limit} more"]
    first = report["first_cpu_op"]
    lines += [f"warning: {warning}" for warning in report["warnings"]]
    lines.append(
        f"{report['edge_tpu_operators']} of {report['operators']} operators map to the Edge TPU "
        f"({100 * report['mapped_share']:.1f}%)"
        + ("" if first is None else f"; from op {first} ({report['ops'][first]['op']}) on, the CPU runs the rest")
    )
    return "\n".join(lines)


def require_mapped(content, output):
    """The static Edge TPU check of `content`; refuses (InputError) unless every op maps."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, os.path.basename(output))
        with open(path, "wb") as f:
            f.write(content)
        report = analyse(path)
    if not report["fully_mapped"]:
        raise InputError(
            f"refusing target edgetpu: the model does not map entirely to the Edge TPU\n"
            f"{format_report(report)}\n"
            "build the model with edge=True and export logits (see docs/android-coral.md, 'Edge TPU')"
        )
    return {key: report[key] for key in ("check", "operators", "edge_tpu_operators", "mapped_share", "first_cpu_op",
                                         "fully_mapped")}


def compile_file(output):
    """Compiles `output` with edgetpu_compiler when it is on PATH (FILE_edgetpu.tflite and its log beside it);
    returns what its log says (edgetpu.parse_compiler_log), or why it did not run."""
    compiler = shutil.which("edgetpu_compiler")
    if compiler is None:
        return "edgetpu_compiler not on PATH: the static check is what was done"
    run = subprocess.run([compiler, "-s", "-o", os.path.dirname(os.path.abspath(output)), output],
                         capture_output=True, text=True)
    log = os.path.splitext(output)[0] + "_edgetpu.log"
    files.write_text_atomic(log, run.stdout + run.stderr)
    return {"returncode": run.returncode, "log": log, **parse_compiler_log(run.stdout + run.stderr)}


def main(argv=None):
    parser = cli.ArgumentParser(prog="python -m export.edgetpu", description=__doc__,
                                formatter_class=cli.argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tflite", help="a full-integer .tflite file")
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.tflite):
        raise InputError(f"file not found: {args.tflite}")
    report = analyse(args.tflite)
    print(format_report(report))
    if args.json:
        files.ensure_output_dir(args.json)
        files.write_text_atomic(args.json, json.dumps(report, indent=2))
    return 0 if report["fully_mapped"] else 1


if __name__ == "__main__":
    sys.exit(cli.run(main))
