"""Every segmenter's small configuration on `shapes` under one budget: mIoU, size, compute, latency.

    python benchmarks/zoo_quality.py [--epochs 20] [--image-size 128] [--only NAME ...]
    python benchmarks/zoo_quality.py --table      # the table of the results measured so far

Each configuration below trains with the same data (2000 training images),
optimiser (Adam, cosine-decayed 2e-3), batch size, epochs and seed through
`kerasseg.train.train`, then reports validation mIoU, parameters,
multiply-adds and CPU latency per image (batch 1, Keras). Prints a Markdown
table for RESULTS.md; the quality bar is mIoU >= 0.85.

It first prints the resolution ceiling of each output stride: the mIoU of
the validation masks themselves, average-pooled to a stride-s grid and
upsampled back bilinearly, as a decoder that predicts at stride s would
give at best without skips to finer levels. At 64 px the shapes' radii are 8-17
px and a stride-8 map caps mIoU near 0.82, below the bar whatever the
network learns; hence the 128 px default (stride 8: 0.94).
"""

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The small configuration of every segmenter, trained from scratch: narrow versions of the papers'
# backbones (VGG16 for FCN and DeepLab v1, ResNet for the rest; widths 16..128 instead of 64..512),
# which train from scratch much faster than MobileNetV2 (at width 0.35, a U-Net on it reached only
# 0.60 mIoU in 10 epochs). The atrous rates are given for 64 px inputs and scale with the image: the
# papers' rates are tuned for 321-513 px crops (a 41-65 cell map at stride 8); on 64 px the stride-8
# map has 8x8 cells and the stride-16 one 4x4, so the rates keep roughly the same fraction of the map
# (a rate wider than the map only samples padding).
VGG = {"backbone": "vgg16", "backbone_kwargs": {"widths": (16, 32, 64, 128, 128)}}
RESNET = {"backbone": "resnet18", "backbone_kwargs": {"widths": (16, 32, 64, 128), "stem_filters": 16}}
CONFIGS = {
    "unet": dict(model="unet_edge"),
    "unet (backbone)": dict(model="unet", **RESNET, decoder_filters=(128, 64, 32, 16, 16)),
    "fcn8s": dict(model="fcn8s", **VGG, fc_units=256, fc_kernel=3),
    "hypercolumns": dict(model="hypercolumns", **RESNET, hidden=64),
    "deeplab_v1": dict(model="deeplab_v1", **VGG, fc_units=256, fc6_rate=3),
    "deeplab_v2": dict(model="deeplab_v2", **RESNET, rates=(1, 2, 3, 4)),
    "deeplab_v3": dict(model="deeplab_v3", **RESNET, output_stride=8, multi_grid=(1, 2, 4), aspp_filters=64,
                       aspp_rates=(2, 3, 4)),
    "deeplab_v3_plus": dict(model="deeplab_v3_plus", **RESNET, aspp_filters=64, aspp_rates=(1, 2, 3),
                            decoder_filters=64),
}
RATE_KEYS = ("fc6_rate", "rates", "aspp_rates")


def configuration(label, image_size):
    """CONFIGS[label] with its atrous rates scaled from 64 px to `image_size`."""
    config = dict(CONFIGS[label])
    scale = image_size / 64
    for key in RATE_KEYS:
        if key in config:
            value = config[key]
            config[key] = (max(1, round(value * scale)) if isinstance(value, int)
                           else tuple(max(1, round(r * scale)) for r in value))
    return config


def stride_ceiling(image_size, stride, count=200):
    """mIoU of the `shapes` validation masks pooled to a stride-`stride` grid and resized back bilinearly."""
    from keras import ops

    from kerasseg import metrics
    from kerasseg.data import shapes

    _, masks = shapes.load("val", image_size, image_size, count=count)
    classes = len(shapes.CLASS_NAMES)
    one_hot = ops.one_hot(masks, classes)
    coarse = ops.average_pool(one_hot, stride, stride, padding="valid")
    restored = ops.argmax(ops.image.resize(coarse, (image_size, image_size), interpolation="bilinear"), -1)
    cm = metrics.confusion_matrix(masks, ops.convert_to_numpy(restored), classes)
    return metrics.scores(cm, shapes.CLASS_NAMES)["miou"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--train-samples", type=int, default=None)
    parser.add_argument("--augment", choices=("full", "flip", "none"), default="flip",
                        help="training augmentation (default flip, as the demo: shapes needs no rescaling)")
    parser.add_argument("--only", nargs="*", help="names from CONFIGS")
    parser.add_argument("--output", default="benchmarks/zoo_quality.json")
    parser.add_argument("--table", action="store_true", help="train nothing: print the table of what --output holds")
    args = parser.parse_args()

    import keras

    from export.runtimes import median_ms
    from kerasseg.cli import write_text_atomic
    from kerasseg import models, train
    from kerasseg.profile import multiply_adds

    # Results accumulate in --output, written after each configuration, so `--only` reruns and an
    # interrupted run keep what was measured (a run with other settings starts the file afresh).
    settings = {k: v for k, v in vars(args).items() if k not in ("only", "output", "table")}
    if not args.table:
        print(f"resolution ceiling at {args.image_size} px:",
              ", ".join(f"stride {s} {stride_ceiling(args.image_size, s):.3f}" for s in (2, 4, 8, 16, 32)), flush=True)
    results = {}
    if os.path.exists(args.output):
        with open(args.output) as f:
            saved = json.load(f)
        if {k: saved["settings"].get(k) for k in settings} == settings:
            results = saved["results"]
    for label in CONFIGS:
        if args.table or (args.only and label not in args.only):
            continue
        config = configuration(label, args.image_size)
        name = config.pop("model")
        print(f"== {label}: {name} {config}", flush=True)
        with tempfile.TemporaryDirectory() as out:
            run = train.train(train.TrainConfig(out, model=name, image_size=args.image_size, epochs=args.epochs,
                                                augment=args.augment, model_args=config,
                                                train_samples=args.train_samples))
            report, model = run.metrics, run.load_model()
        size = args.image_size
        fixed = models.create_model(name, classes=len(report["classes"]), input_shape=(size, size, 3), **config)
        x = keras.ops.zeros((1, size, size, 3))
        results[label] = {"model": name, "config": config, "miou": report["miou"],
                          "params": model.count_params(), "macs": multiply_adds(fixed),
                          "latency_ms": median_ms(model.predict_on_batch, x, 30, warmup=3),
                          "train_seconds": report["train_seconds"]}
        keras.backend.clear_session()
        write_text_atomic(args.output, json.dumps({"settings": settings, "results": results}, indent=2))
    results = {label: results[label] for label in CONFIGS if label in results}
    print(f"\n| segmenter | configuration | val mIoU | >= 0.85 | parameters | multiply-adds ({args.image_size}x"
          f"{args.image_size}) | CPU ms/image | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for label, r in results.items():
        print(f"| {label} | `{r['model']}` {r['config']} | {r['miou']:.3f} | {'yes' if r['miou'] >= 0.85 else 'NO'} | "
              f"{r['params']:,} | {r['macs'] / 1e6:.0f} M | {r['latency_ms']:.1f} | {r['train_seconds']:.0f} |")


if __name__ == "__main__":
    main()
