"""The exporter contract, written once: what every format's export takes, how its command line is wired, when
a quantization-aware model is compared as its float twin, and which runtime runs a file.

A format is one module: it declares a `Format` (its name, its file suffix, how to convert a model, the runner
of its files: a runtimes.Runner, its own options: an `Options` subclass, typed) and registers it. Everything
else is here, the same for every format:

- `export(fmt, model, output, **data, **options)`: the data keywords (DATA_KEYWORDS: calibration,
  validation, class names, input normalization, image size, how many samples, thresholds, latency) read
  as the user has them (kerasseg.data.values), the model ending in the output kind asked for, the QAT twin
  decision, the conversion, the check in the file's runtime, the file and its report written (atomically,
  after the check), from any Keras backend (export.backend);
- `main(fmt, argv)`: the command line: the shared options (export.commands), the format's own, one
  resolution of the model file (kerasseg.resolve.stage: the model loaded once, its run's record read
  once), the summary printed, exit status 1 when a threshold fails;
- the runtime of a file kind: `runtimes.register(suffix, runner)`, found by `runtimes.open_runner`.

Adding a format is one file (tests/test_formats.py adds one in the test itself).
"""

import dataclasses
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kerasseg import cli, files

backend, commands, fingerprints, pipeline, qat, reports, runtimes, values = cli.lazy_import(
    "export.backend", "export.commands", "export.fingerprint", "export.pipeline", "kerasseg.qat", "export.report",
    "export.runtimes", "kerasseg.data.values")

VALIDATION_SPLIT = "the validation split"  # an option to be the run's validation split (resolved by main)
DATA_KEYWORDS = ("calibration", "validation", "class_names", "input_normalization", "image_size", "samples",
                 "calibration_samples", "thresholds", "latency")
FORMATS = {}  # name: Format


@dataclass(frozen=True)
class Options:
    """The options every export passes a format's functions besides the format's own: a format declares its own
    as a subclass (its fields and their defaults, from which its Format's `defaults` are made:
    `Options.defaults()`), and reads the mapping the export hands it (through a TensorFlow child process too)
    as one, typed: `Options.of(options)`."""

    output: str | None = None  # the file being written
    samples: int | str | None = None  # how many held-out samples the check takes
    thresholds: Mapping[str, float] | None = None  # the check's, where given

    @classmethod
    def of(cls, options: Mapping[str, Any]):
        """`options` (a mapping) as this class: its fields from it, the rest left out."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in options.items() if key in names})

    @classmethod
    def defaults(cls) -> dict:
        """The format's own options (not Options' shared ones) with their defaults."""
        shared = {f.name for f in dataclasses.fields(Options)}
        return {f.name: f.default for f in dataclasses.fields(cls) if f.name not in shared}


@dataclass(frozen=True)
class Format:
    """What makes a format. `convert(model, size, found, options)` returns (the file's bytes, extra report
    fields; `found`: the export's pipeline.Inputs; `options`: the format's, with the export's output, samples
    and thresholds) for the float32 model (ending in the output kind asked for; a quantization-aware model as itself
    when `integer(options)`, else as its float twin); `runner(path, num_threads)` runs its files;
    `quantization(options)` names the mode the report and the default thresholds use; `calibrates(options,
    model)`: whether it needs calibration images; `check(options)` refuses options before any work;
    `add_options(parser)` and `options_from(args)` are its command-line options; `after(report, output,
    options)` may amend the report once the file is written (the Edge TPU compiler); `advice(args, report)`
    what a failing file's command line prints besides."""

    name: str
    suffix: str
    module: str  # where it is declared (the TensorFlow child of another backend imports it)
    convert: Callable[[Any, tuple, Any, Mapping[str, Any]], tuple[bytes, dict]]
    runner: Callable[..., "runtimes.Runner"]  # (path, num_threads)
    quantization: Callable[[Mapping[str, Any]], str] = lambda options: options.get("quantize", "float32")
    integer: Callable[[Mapping[str, Any]], bool] = lambda options: options.get("quantize") == "int8"
    calibrates: Callable[[Mapping[str, Any], Any], bool] = lambda options, model: options.get("quantize") == "int8"
    check: Callable[[Mapping[str, Any]], None] = lambda options: None
    add_options: Callable[[Any], None] = lambda parser: None
    options_from: Callable[[Any], dict] = lambda args: {}
    after: Callable[[dict, str, Mapping[str, Any]], dict] | None = None
    advice: Callable[[Any, dict], str | None] | None = None
    defaults: dict = field(default_factory=dict)  # its own options' defaults (an Options subclass's defaults())


def register(fmt):
    """Registers `fmt` (its name once) and its files' runner; returns it."""
    if fmt.name in FORMATS and FORMATS[fmt.name].module != fmt.module:
        raise ValueError(f"format {fmt.name!r} is registered already, by {FORMATS[fmt.name].module}")
    FORMATS[fmt.name] = fmt
    runtimes.register(fmt.suffix, fmt.runner)
    return fmt


def export(fmt, model, output, **given):
    """`fmt`'s file of `model` (a keras.Model, its .keras path, or a kerasseg.files.ModelFile) at `output`,
    checked in its runtime against the model and written with FILE.report.json; returns the ExportReport.
    A file that fails its thresholds is still written (its report says what failed). `given`: the data
    keywords (DATA_KEYWORDS, each None when not given) and `fmt`'s options (its defaults for the rest); a
    format's own `export` passes its keyword arguments as they are: `formats.export(FORMAT, **locals())`."""
    data = {key: given.pop(key, None) for key in DATA_KEYWORDS}
    unknown = sorted(set(given) - set(fmt.defaults))
    if unknown:
        raise TypeError(f"{fmt.name} export got unexpected keyword arguments {unknown}")
    options = {**fmt.defaults, **given}
    if backend.foreign():
        return backend.export_elsewhere(fmt.module, model, output, {**data, **options})
    fmt.check(options)
    found = pipeline.inputs(model, data["image_size"], data["validation"], data["calibration"], data["class_names"],
                            data["samples"], data["calibration_samples"],
                            calibrate=lambda model: fmt.calibrates(options, model),
                            input_normalization=data["input_normalization"], thresholds=data["thresholds"])
    return export_inputs(fmt, found, output, {**options, "samples": data["samples"]}, data["thresholds"],
                         bool(data["latency"]))


def export_inputs(fmt, found, output, options, thresholds=None, latency=False):
    """`export` on inputs already read (pipeline.Inputs: the model, the size, the held-out samples, the
    calibration images), with `fmt`'s `options` (its defaults filled in): what export.android converts its
    bundle's file with, the inputs read once."""
    options = {**fmt.defaults, "samples": None, **options, "output": output, "thresholds": thresholds}

    def build(model, size):
        kind = options.get("output_kind", "logits")
        extra = {"output_kind": pipeline.output_kind(model) if kind == "logits" else kind}
        model = pipeline.with_output_kind(model, kind)
        if qat.is_quantization_aware(model):  # the QAT twin decision, for every format
            extra["quantization_aware"] = True
            if not fmt.integer(options):  # no int8 arithmetic to simulate: the float model it computes
                model, _ = qat.export_twin(model)
                extra["compared_with"] = "the quantization-aware model's float twin (folded int8-exact weights)"
        content, more = fmt.convert(model, size, found, options)
        if found.fingerprint:  # (the weights it came from, in its metadata: export.fingerprint)
            content = fingerprints.stamp(content, fmt.suffix, found.fingerprint)
        return model, content, {**extra, **more}

    report = pipeline.export_checked(found, output, build, fmt.quantization(options), thresholds, latency=latency)
    if fmt.after is not None:
        report = fmt.after(report, output, options)
    return reports.ExportReport.from_dict(report)


def exporter_inputs(stage, data, calibrate):
    """The data keywords of an export of a resolved model file (kerasseg.resolve.Stage) under the command
    line's data options (export.commands.DataOptions): the held-out test split, and when `calibrate`, the
    training split (of --calibration-dataset, else --dataset, else the run's)."""
    view = stage.data(data.dataset)
    found = {"image_size": data.image_size, "samples": data.samples,
             "validation": view.pairs("test", data.samples or values.DEFAULT_SAMPLES, stage.image_size)}
    if calibrate:
        calibration = stage.data(data.calibration_dataset or data.dataset)
        found["calibration"] = calibration.pairs("train", data.calibration_samples, stage.image_size)
        found["calibration_samples"] = data.calibration_samples
    return found


def main(fmt, argv=None, description=None):
    """`python -m export.<format>`: its command line, as every format's (`description`: its --help's text)."""
    parser = commands.exporter_parser(f"python -m {fmt.module}", description, f"the {fmt.suffix} file to write")
    fmt.add_options(parser)
    commands.add_arguments(parser)
    args = parser.parse_args(argv)
    if backend.foreign():  # (the conversion needs TensorFlow's tracing)
        return backend.rerun(fmt.module, argv)
    from kerasseg import resolve

    options = {**fmt.defaults, **fmt.options_from(args)}
    data = commands.DataOptions.from_args(args)
    fmt.check(options)
    files.ensure_output_dir(args.output)  # (before any data is read)
    stage = resolve.stage(args.model, data.image_size, data.dataset)
    found = exporter_inputs(stage, data, fmt.calibrates(options, stage.model))
    for key, value in options.items():
        if value is VALIDATION_SPLIT:
            options[key] = stage.split("val", data.samples or values.DEFAULT_SAMPLES, data.dataset)
    report = export(fmt, stage.file, args.output, thresholds=data.overrides, latency=args.latency, **found,
                    **options)
    reports.print_summary(report, args.output)
    if not report.passed and fmt.advice is not None:
        advice = fmt.advice(args, report)
        if advice:
            print(advice, file=sys.stderr)
    return 0 if report.passed else 1
