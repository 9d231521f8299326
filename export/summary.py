"""One table for a run directory: training result and every export beside it.

    python -m export.summary runs/demo [--min-miou 0.90] [--min-int8-agreement 0.99]

Reads DIR/metrics.json (from kerasseg.train) and DIR/*.report.json (from the
exporters). With the --min-* flags it also checks the demo's promises and
exits with status 1 when one is not kept.
"""

import glob
import json
import os
import sys

from kerasseg import cli
from kerasseg.errors import InputError


def _load(path):
    with open(path) as f:
        return json.load(f)


def summarize(directory):
    metrics_path = os.path.join(directory, "metrics.json")
    if not os.path.isfile(metrics_path):
        raise InputError(f"{metrics_path} not found: train first with python -m kerasseg.train --output {directory}")
    metrics = _load(metrics_path)
    reports = []
    for path in sorted(glob.glob(os.path.join(directory, "*.report.json"))):
        report = _load(path)
        report["file"] = os.path.basename(path).replace(".report.json", "")
        reports.append(report)
    return metrics, reports


def _number(value, spec, unit=""):
    return "-" if value is None else f"{value:{spec}}{unit}"  # (mIoU on a dataset of other classes: not computed)


def format_table(metrics, reports):
    h, w = metrics["image_size"]
    per_class = ", ".join(f"{k} {v:.3f}" for k, v in metrics["per_class_iou"].items() if v is not None)
    lines = [
        f"{metrics['model']} on {metrics['dataset']} ({h}x{w}, {metrics['epochs']} epochs, "
        f"{metrics['train_seconds']:.0f} s): validation mIoU {metrics['miou']:.4f}",
        f"  per-class IoU: {per_class}",
        "",
    ]
    header = ("export", "runtime", "quant", "pixel agr.", "mIoU", "mIoU drop", "max |err|", "size", "latency", "passed")
    rows = []
    if reports:
        first = reports[0]
        model_size = os.path.getsize(first["model"]) if os.path.isfile(first.get("model", "")) else None
        rows.append(("model.keras", "keras", "float32", "-", _number(first["miou_reference"], ".4f"), "-", "-",
                     f"{model_size / 1e6:.2f} MB" if model_size else "-",
                     _number(first["keras_latency_ms"], ".2f", " ms"), "-"))
    for r in reports:
        rows.append((r["file"], r["runtime"], r["quantization"], f"{r['pixel_agreement']:.5f}",
                     _number(r["miou_exported"], ".4f"), _number(r["miou_drop"], "+.2f", " pts"),
                     f"{r['max_abs_error']:.3g}",
                     f"{r['size_bytes'] / 1e6:.2f} MB", _number(r["latency_ms"], ".2f", " ms"),
                     "yes" if r["passed"] else "NO: " + "; ".join(r["failed"])))
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * n for n in widths), *rows]:
        lines.append("  ".join(str(cell).ljust(n) for cell, n in zip(row, widths)).rstrip())
    if reports:
        lines.append(f"(agreement on {reports[0]['samples']} held-out test images; latency: median, batch 1, this CPU; "
                     "model.keras also holds the optimizer state)")
    return "\n".join(lines)


def main(argv=None):
    parser = cli.ArgumentParser(prog="python -m export.summary", description=__doc__,
                                formatter_class=cli.argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory")
    parser.add_argument("--min-miou", type=float, help="fail unless validation mIoU reaches this")
    parser.add_argument("--min-int8-agreement", type=float, help="fail unless every int8 export agrees this well")
    args = parser.parse_args(argv)
    metrics, reports = summarize(args.directory)
    print(format_table(metrics, reports))
    problems = [f"{r['file']}: {'; '.join(r['failed'])}" for r in reports if not r["passed"]]
    if args.min_miou is not None and metrics["miou"] < args.min_miou:
        problems.append(f"validation mIoU {metrics['miou']:.4f} < {args.min_miou}")
    if args.min_int8_agreement is not None:
        int8 = [r for r in reports if r["quantization"] == "int8"]
        if not int8:
            problems.append("no int8 export found")
        problems += [f"{r['file']}: int8 pixel agreement {r['pixel_agreement']:.5f} < {args.min_int8_agreement}"
                     for r in int8 if r["pixel_agreement"] < args.min_int8_agreement]
    for problem in problems:
        print(f"NOT MET: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
