"""Agreement of an exported file with its Keras model: the numbers, the thresholds, the report.

Layered above `export.runtimes` (which runs the file) and below the
convert-check-write pipeline (`export.pipeline`) and the exporters.
"""

import os
import sys
from dataclasses import dataclass, field, fields

import numpy as np

from kerasseg import files
from kerasseg.described import output_kind
from kerasseg.errors import InputError
from kerasseg.labels import decide, mask_classes
from export.runtimes import median_ms, open_runner

# Quantization changes logits by design; what must survive is the predicted class.
DEFAULT_THRESHOLDS = {
    "float32": {"max_abs_error": 1e-4},
    "float16": {"pixel_agreement": 0.999},
    "dynamic": {"pixel_agreement": 0.99, "miou_drop": 1.0},
    "int8": {"pixel_agreement": 0.99, "miou_drop": 1.0},
    "int16x8": {"pixel_agreement": 0.995, "miou_drop": 0.5},  # activations 256 times finer than int8
}
_UPPER_BOUNDS = ("max_abs_error", "mean_abs_error", "miou_drop")
# an mIoU gain of the file over its model is flagged beyond GAIN_SIGMAS times the sampling noise of the difference
# (a paired bootstrap over the held-out images), and never under MIN_GAIN points: rounding moves few pixels
GAIN_SIGMAS, MIN_GAIN = 3.0, 1.0  # (MIN_GAIN: int8's default bar for a loss, miou_drop 1.0, for a gain too)
THRESHOLDS = ("pixel_agreement", "max_abs_error", "mean_abs_error", "miou_drop")
_LIMITS = {"pixel_agreement": (0.0, 1.0), "max_abs_error": (0.0, float("inf")), "mean_abs_error": (0.0, float("inf")),
           "miou_drop": (-100.0, 100.0)}  # (a share of pixels; errors of logits; mIoU points)


def checked_thresholds(thresholds):
    """`thresholds` ({name: value} replacing a mode's defaults, or None) as a dict, or an InputError naming
    the name or value that cannot be used: checked before any work."""
    import difflib

    if thresholds is None:
        return {}
    if not isinstance(thresholds, dict):
        raise InputError(f"thresholds must be a dict {{name: value}} of {', '.join(THRESHOLDS)}; received "
                         f"{thresholds!r}")
    for key, value in thresholds.items():
        if key not in THRESHOLDS:
            close = difflib.get_close_matches(str(key), THRESHOLDS, 1)
            raise InputError(f"unknown threshold {key!r}{f' (did you mean {close[0]!r}?)' if close else ''}; "
                             f"accepted: {', '.join(THRESHOLDS)}")
        low, high = _LIMITS[key]
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not low <= value <= high:
            raise InputError(f"threshold {key}={value!r} must be a number from {low:g} to {high:g}"
                             + (" (a share of the pixels)" if key == "pixel_agreement" else
                                " (mIoU points)" if key == "miou_drop" else ""))
    return dict(thresholds)


@dataclass(frozen=True)
class ExportReport:
    """What an export measured in its runtime; `to_dict()` is FILE.report.json. `report["key"]` reads
    any of its entries, the fields below and those in `details` (the model, the dataset, the size, the
    calibration, per-class IoU, the learned ranges of a quantization-aware model, ...)."""

    passed: bool
    failed: tuple  # the thresholds that failed, as "pixel_agreement 0.97 < 0.99"
    runtime: str
    quantization: str
    samples: int
    pixel_agreement: float  # the share of pixels whose predicted class the file and the model agree on
    max_abs_error: float
    mean_abs_error: float
    miou_reference: float = None  # None: not measured (samples without masks, or of other classes)
    miou_exported: float = None
    miou_drop: float = None  # in mIoU points
    latency_ms: float = None
    size_bytes: int = None
    details: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, report):
        names = {f.name for f in fields(cls)} - {"details"}
        return cls(**{key: tuple(value) if key == "failed" else value for key, value in report.items()
                      if key in names}, details={key: value for key, value in report.items() if key not in names})

    def to_dict(self):
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "details"}
        return {**values, "failed": list(self.failed), **self.details}

    def __getitem__(self, key):
        return self.to_dict()[key]

    def get(self, key, default=None):
        return self.to_dict().get(key, default)


def keras_function(model, image_size):
    """`model` on float32 batches of `image_size` (h, w) images, traced for that size: Keras's own predict
    retraces an any-size model at an unknown size, where some layers cannot run (UpSampling2D's bilinear:
    OperatorNotAllowedInGraphError)."""
    import tensorflow as tf

    spec = tf.TensorSpec([None, *image_size, 3], tf.float32)
    function = tf.function(lambda images: model(images, training=False), input_signature=[spec])
    return lambda images: np.asarray(function(np.asarray(images, np.float32)))


def compare(model, runner, samples, latency_repeats=0, kind="logits"):
    """The agreement numbers of `runner` against `model` on `samples` (a data.Split), and both
    models' predicted classes (`kind`: what both output, "logits" or "probabilities": how a one-channel
    output decides, kerasseg.labels.decide). `latency_repeats`: how many timed runs of each give its latency
    (0: not measured, None in the report; benchmarks and the demo ask for it)."""
    from kerasseg import metrics

    images = samples.images.astype(np.float32)
    predict = keras_function(model, images.shape[1:3])
    reference = np.concatenate([predict(images[i : i + 8]) for i in range(0, len(images), 8)])
    exported = runner.run_all(images) if hasattr(runner, "run_all") else np.stack([runner(image) for image in images])
    if exported.shape != reference.shape:
        raise InputError(f"the exported model returns {exported.shape[1:]} per image, the Keras model "
                         f"{reference.shape[1:]}")
    error = np.abs(exported.astype(np.float64) - reference)
    ref_class, exp_class = predicted_classes(reference, kind), predicted_classes(exported, kind)
    numbers = {
        "samples": len(images),
        "nonfinite_outputs": int((~np.isfinite(exported)).sum()),
        "max_abs_error": float(error.max()),
        "mean_abs_error": float(error.mean()),
        "pixel_agreement": float((ref_class == exp_class).mean()),
        "miou_reference": None, "miou_exported": None, "miou_drop": None,
        "per_class_iou_reference": None, "per_class_iou_exported": None,
        "latency_ms": median_ms(runner, images[0], latency_repeats) if latency_repeats else None,
        "keras_latency_ms": median_ms(predict, images[:1], latency_repeats) if latency_repeats else None,
    }
    if samples.masks is None:
        numbers["miou_note"] = "mIoU not computed: the samples have no masks; compared on pixels and logits only"
        return numbers, (ref_class, exp_class)
    classes = mask_classes(model.outputs[0].shape[-1]) if reference.ndim == 4 else samples.num_classes
    if classes != samples.num_classes:  # another dataset's images still show whether the two models agree
        numbers["miou_note"] = (f"mIoU not computed: the model predicts {classes} classes and dataset "
                                f"{samples.spec!r} has {samples.num_classes}; compared on pixels and logits only")
        return numbers, (ref_class, exp_class)
    n = samples.num_classes
    if samples.labels is not None:  # (scored at each label's own resolution, as the deployed model is)
        from kerasseg.inference import confusion_at

        ref_cms = [confusion_at(r, label, n, kind) for r, label in zip(reference, samples.labels)]
        exp_cms = [confusion_at(e, label, n, kind) for e, label in zip(exported, samples.labels)]
    else:
        ref_cms = [metrics.confusion_matrix(m, c, n) for m, c in zip(samples.masks, ref_class)]
        exp_cms = [metrics.confusion_matrix(m, c, n) for m, c in zip(samples.masks, exp_class)]
    ref_cm, exp_cm = sum(ref_cms), sum(exp_cms)
    ref_scores, exp_scores = metrics.scores(ref_cm, samples.class_names), metrics.scores(exp_cm, samples.class_names)
    numbers.update(miou_reference=ref_scores["miou"], miou_exported=exp_scores["miou"],
                   miou_drop=100.0 * (ref_scores["miou"] - exp_scores["miou"]),
                   miou_drop_noise=paired_noise(ref_cms, exp_cms),
                   per_class_iou_reference=ref_scores["per_class_iou"],
                   per_class_iou_exported=exp_scores["per_class_iou"])
    return numbers, (ref_class, exp_class)


def _mious(cms):
    """The mIoU of each confusion matrix of `cms` (B, C, C) (classes absent from both left out)."""
    tp = np.diagonal(cms, axis1=1, axis2=2).astype(np.float64)
    union = cms.sum(1) + cms.sum(2) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nanmean(np.where(union > 0, tp / union, np.nan), axis=1)


def paired_noise(ref_cms, exp_cms, draws=400):
    """The sampling noise (one standard deviation, mIoU points) of the difference between two models' mIoU on
    the same images (their per-image confusion matrices): a paired bootstrap over the images, seeded."""
    if len(ref_cms) < 2:
        return None
    ref, exp = np.stack(ref_cms), np.stack(exp_cms)
    picks = np.random.default_rng(0).integers(0, len(ref), (draws, len(ref)))
    diffs = _mious(ref[picks].sum(1)) - _mious(exp[picks].sum(1))
    return float(100.0 * np.nanstd(diffs))


def predicted_classes(outputs, kind="logits"):
    """Class per pixel of a batch of logits / probabilities (N, H, W, C) (decided as kerasseg.labels.decide
    decides: one channel is a binary segmenter's foreground score) or class indices (N, H, W)."""
    return outputs if outputs.ndim == 3 else decide(outputs, kind)


def check(report, thresholds, required=()):
    """Failed threshold descriptions; an empty list means the export passed. A threshold that could not be
    measured (mIoU on a dataset of other classes: said in miou_note) fails if it is `required` (one the user
    set), else is passed over."""
    failures = []
    if report.get("nonfinite_outputs"):
        failures.append(f"nonfinite_outputs {report['nonfinite_outputs']} > 0 (NaN or infinite logits)")
    for key, limit in thresholds.items():
        value = report[key]
        if value is None or value != value:  # (not measured, or NaN)
            if key in required:
                failures.append(f"{key} not measured ({report.get('miou_note') or 'no pixel to score'}), and a "
                                f"threshold for it was set ({limit:g})")
            continue
        ok = value <= limit if key in _UPPER_BOUNDS else value >= limit
        if not ok:
            failures.append(f"{key} {value:.6g} {'>' if key in _UPPER_BOUNDS else '<'} {limit:g}")
    drop, noise = report.get("miou_drop"), report.get("miou_drop_noise")
    if drop is not None and noise is not None and -drop > max(GAIN_SIGMAS * noise, MIN_GAIN):
        failures.append(f"miou_gain {-drop:.3g} > {max(GAIN_SIGMAS * noise, MIN_GAIN):.3g}: the file scores "
                        f"{-drop:.2f} points above its model, beyond the sampling noise of {len_of(report)} images "
                        f"({noise:.2f} points): rounding does not do that; is it another model's file?")
    return failures


def len_of(report):
    return report.get("samples", "the")


def disagreement_png(samples, classes, path, count=4):
    """Writes the `count` held-out images with the most disagreeing pixels, side by side."""
    from kerasseg import plots

    reference, exported = classes
    differing = (reference != exported).reshape(len(reference), -1).mean(1)
    rows, captions = [], []
    for i in np.argsort(-differing, kind="stable")[:count]:
        image = np.clip(np.round(samples.images[i]), 0, 255).astype(np.uint8)  # (float pixels too)
        rows.append([image, plots.colorize(reference[i]), plots.colorize(exported[i]),
                     plots.differences(image, reference[i], exported[i])])
        captions.append(f"test #{i}: {100 * differing[i]:.2f}% differ")
    plots.save_grid(rows, ["image", "Keras", "exported", "differ"], path, captions)


def agreement_report(model, exported_path, samples, quantization=None, overrides=None, extra=None, runner=None,
                     figure=None, latency_repeats=0, fingerprint=None, other_weights=False, expected=None):
    """Runs the comparison and returns the complete report dictionary (and draws `figure`, a PNG path).

    fingerprint: export.fingerprint.of_model of the model the file should come from: a file that carries
    another fails ("fingerprint"), unless `other_weights` (a pairing that is meant: the report still says
    it); expected: for a file without one, what the same quantization of the model does (export.expected.
    simulated, with its "thresholds"), which replace those the user did not set where they are tighter."""
    from export import fingerprint as fingerprints

    runner = runner or open_runner(exported_path)
    quantization = quantization or runner.quantization
    thresholds = {**DEFAULT_THRESHOLDS[quantization], **(overrides or {})}
    stamped = fingerprints.read(exported_path)
    report = {"runtime": runner.runtime, "quantization": quantization, **(extra or {}),
              "fingerprint": {"model": fingerprint, "file": stamped and stamped.get("fingerprint"),
                              "file_model": stamped and stamped.get("model")}}
    if stamped is None and expected is not None:
        report["expected"] = expected
        for key, limit in expected["thresholds"].items():
            if key not in (overrides or {}):
                thresholds[key] = max(limit, thresholds.get(key, 0.0)) if key not in _UPPER_BOUNDS else \
                    min(limit, thresholds.get(key, float("inf")))
    kind = report.get("output_kind") or output_kind(model)
    numbers, classes = compare(model, runner, samples, latency_repeats, kind=kind)
    report.update(numbers)
    if figure:
        disagreement_png(samples, classes, figure)
        report["disagreement_png"] = os.fspath(figure)
    report["size_bytes"] = os.path.getsize(exported_path)
    report["thresholds"] = thresholds
    report["failed"] = check(report, thresholds, required=tuple(overrides or ()))
    words = None
    if stamped and fingerprint and stamped.get("fingerprint") != fingerprint:
        words = ("fingerprint", "the file was converted from other weights "
                 f"(fingerprint {fingerprints.short(stamped.get('fingerprint'))}"
                 f", of {stamped.get('model')}) than the model's ({fingerprints.short(fingerprint)})")
    weights = (report.get("expected") or {}).get("weights") or {}
    if weights.get("passed") is False:
        words = ("weights", f"{weights['differing']:.1%} of the file's {weights['compared']:,} weight values lie "
                 "further from the same conversion of this model, made here, than rounding one weight twice can "
                 "(the same weights: none)")
    if words and other_weights:
        report["fingerprint"]["note"] = f"{words[1]}: compared as asked (other_weights)"
    elif words:
        report["failed"].insert(0, f"{words[0]}: {words[1]}: it is not this model's file (other_weights=True, or "
                                   "--other-weights, when the pairing is meant)")
    report["passed"] = not report["failed"]
    return report


def print_summary(report, path):
    miou = report.get("miou_note") or (f"mIoU {report['miou_reference']:.4f} -> {report['miou_exported']:.4f} "
                                       f"(drop {report['miou_drop']:.2f} pts)")
    print(
        f"{path}: {report['runtime']} {report['quantization']}, {report['samples']} held-out samples: "
        f"pixel agreement {report['pixel_agreement']:.5f}, max |error| {report['max_abs_error']:.3g}, "
        f"{miou}, {report['size_bytes'] / 1e6:.2f} MB" +
        (f", {report['latency_ms']:.2f} ms/image" if report.get("latency_ms") is not None else "")
    )
    if (report.get("fingerprint") or {}).get("file") is None and report.get("expected"):
        print(f"the file carries no fingerprint: held to what {report['expected']['how']} does to the model "
              f"(pixel agreement {report['expected']['pixel_agreement']:.5f}, mean |error| "
              f"{report['expected']['mean_abs_error']:.3g}), within a factor of {report['expected']['factor']:g}; "
              + _weights_text(report["expected"].get("weights") or {}))
    if report["passed"]:
        print("agreement: passed")
    else:
        print(f"agreement: FAILED: {'; '.join(report['failed'])}", file=sys.stderr)


def _weights_text(weights):
    if not weights.get("compared"):
        return f"its weights {weights.get('note', 'not compared')}"
    return (f"its weights: {weights['differing']:.2%} of {weights['compared']:,} values differ from that file's "
            f"(at most {weights['limit']:.0%})")


def write_report(report, path):
    files.write_text_atomic(path, files.json_text(report))


def report_path(output):
    return os.path.splitext(os.fspath(output))[0] + ".report.json"


def figure_path(report):
    """FILE.disagreement.png beside FILE.report.json."""
    return os.fspath(report).removesuffix(".report.json").removesuffix(".json") + ".disagreement.png"
