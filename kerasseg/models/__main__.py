"""Every registered model in one table: `python -m kerasseg.models [--plot FILE.png]`.

Columns: name, task, parameters, multiply-adds for one image at the model's
default input size, and the ImageNet top-1 accuracy its paper reports
(ResNet: 10-crop, Table 2/3 of He et al.; VGG: single scale, Table 3; others
single crop; GoogLeNet's paper reports top-5 only). `--plot` draws the
lecture's summary chart from the same numbers: multiply-adds against top-1,
bubble area proportional to parameters.
"""

import sys

from kerasseg import cli, files
from kerasseg.profile import multiply_adds

PAPER_TOP1 = {
    "vgg16": 74.4, "vgg19": 74.5,
    "resnet18": 72.1, "resnet34": 75.5, "resnet50": 77.2, "resnet101": 78.3, "resnet152": 78.6,
    "se_resnet50": 76.7, "se_resnet101": 77.6, "se_resnet152": 78.4,
    "densenet121": 75.0, "densenet169": 76.2, "densenet201": 77.4,
    "efficientnet_b0": 77.1, "efficientnet_b1": 79.1, "efficientnet_b2": 80.1, "efficientnet_b3": 81.6,
    "efficientnet_b4": 82.9, "efficientnet_b5": 83.6, "efficientnet_b6": 84.0, "efficientnet_b7": 84.3,
    "mobilenet_v2": 72.0,
}
_EFFICIENTNET_SIZES = {f"efficientnet_b{i}": s for i, s in enumerate((224, 240, 260, 300, 380, 456, 528, 600))}


def default_size(name, task):
    if task == "segmentation":
        return 256
    return _EFFICIENTNET_SIZES.get(name, 224)


def rows(names=None):
    import keras

    from kerasseg import models

    for name in names or models.list_models(tiny=False):
        task = models.model_task(name)
        size = default_size(name, task)
        model = models.create_model(name, input_shape=(size, size, 3))
        family = "se_resnet" if name.startswith("se_") else models.get_builder(name).__module__.rsplit(".", 1)[-1]
        yield {"name": name, "task": task, "family": family, "params": model.count_params(), "size": size,
               "macs": multiply_adds(model), "top1": PAPER_TOP1.get(name)}
        del model
        keras.backend.clear_session()


def plot(table, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [r for r in table if r["top1"] is not None]
    families = sorted({r["family"] for r in points})
    colours = dict(zip(families, plt.get_cmap("tab10").colors))
    fig, ax = plt.subplots(figsize=(10, 6.5))
    for family in families:
        group = [r for r in points if r["family"] == family]
        ax.scatter([r["macs"] / 1e9 for r in group], [r["top1"] for r in group], s=[r["params"] / 1e5 for r in group],
                   alpha=0.5, color=colours[family], label=family)
    for r in points:
        ax.annotate(r["name"], (r["macs"] / 1e9, r["top1"]), fontsize=7, ha="center", va="bottom")
    ax.legend(loc="lower right", fontsize=8, markerscale=0.3)
    ax.set_xscale("log")
    ax.set_xlabel("multiply-adds per image (G, log scale; default input size)")
    ax.set_ylabel("ImageNet top-1 accuracy reported by the paper (%)")
    ax.set_title("kerasseg classifiers: accuracy vs. compute (bubble area ~ parameters)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    files.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=130, format="png"))


def main(argv=None):
    parser = cli.ArgumentParser(prog="python -m kerasseg.models", description=__doc__,
                                formatter_class=cli.argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plot", help="also draw multiply-adds vs top-1 to this PNG")
    parser.add_argument("--task", choices=("classification", "segmentation"))
    args = parser.parse_args(argv)
    from kerasseg import models

    names = models.list_models(task=args.task, tiny=False)
    table = []
    print(f"{'model':<18} {'task':<15} {'parameters':>13} {'input':>7} {'multiply-adds':>14} {'paper top-1':>12}")
    for r in rows(names):
        table.append(r)
        top1 = f"{r['top1']:.1f}" if r["top1"] is not None else "-"
        print(f"{r['name']:<18} {r['task']:<15} {r['params']:>13,} {r['size']:>7} {r['macs'] / 1e9:>12.2f} G "
              f"{top1:>12}", flush=True)
    if args.plot:
        plot(table, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
