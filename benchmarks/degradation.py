"""The degradation problem, reproduced: plain-20/56 against ResNet-20/56 (He et al. 2015, Fig. 1 and 6).

    python benchmarks/degradation.py [--epochs 12] [--train-samples 6000] [--output benchmarks/degradation]

All four CIFAR-style networks (`kerasseg.models.resnet_cifar`, with and
without shortcuts) train with the same seed, data, optimiser (SGD, momentum
0.9, cosine-decayed learning rate) and budget on the built-in shape
classification data (32x32, 3 classes). Training error per epoch is the
model's error on the training set after the epoch (inference mode), the
quantity of the paper's figures; validation error on held-out images too.
Writes OUTPUT.png (the curves), OUTPUT.json (the numbers) and prints a
Markdown table for RESULTS.md. Whatever the curves show is what is reported.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# the ResNets use the paper's CIFAR shortcut, option A (zero-padding where the channels double: no parameters)
RUNS = (("plain-20", 20, False), ("plain-56", 56, False), ("ResNet-20", 20, "A"), ("ResNet-56", 56, "A"))


def train(depth, shortcut, data, args):
    import keras

    from kerasseg import models

    (x_train, y_train), (x_val, y_val) = data
    keras.utils.set_random_seed(args.seed)
    model = models.resnet_cifar(depth=depth, classes=3, shortcut=shortcut, classifier_activation=None)
    steps = args.epochs * -(-len(x_train) // args.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(args.lr, steps)
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    # running_train_error: the training-mode error over each epoch's batches as they are learnt (the
    # paper's thin curves); train_error: the model after the epoch in inference mode on the training set
    curve = {"running_train_error": [], "train_error": [], "val_error": []}
    started = time.time()
    for epoch in range(args.epochs):
        history = model.fit(x_train, y_train, batch_size=args.batch_size, epochs=epoch + 1, initial_epoch=epoch,
                            verbose=0)
        curve["running_train_error"].append(1.0 - history.history["accuracy"][-1])
        for key, (x, y) in (("train_error", (x_train, y_train)), ("val_error", (x_val, y_val))):
            accuracy = model.evaluate(x, y, batch_size=256, verbose=0, return_dict=True)["accuracy"]
            curve[key].append(1.0 - accuracy)
        print(f"  epoch {epoch + 1}/{args.epochs}: running training error {curve['running_train_error'][-1]:.3f}, "
              f"training error {curve['train_error'][-1]:.3f}, validation error {curve['val_error'][-1]:.3f}",
              flush=True)
    curve["seconds"] = time.time() - started
    curve["parameters"] = model.count_params()
    return curve


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    styles = {20: dict(color="tab:orange"), 56: dict(color="tab:red")}
    for ax, kind in zip(axes, ("plain", "ResNet")):
        for name, curve in results.items():
            if not name.startswith(kind):
                continue
            depth = int(name.split("-")[1])
            epochs = np.arange(1, len(curve["train_error"]) + 1)
            ax.plot(epochs, 100 * np.array(curve["train_error"]), label=f"{name} train", **styles[depth])
            ax.plot(epochs, 100 * np.array(curve["val_error"]), "--", label=f"{name} validation", **styles[depth])
        ax.set_title(f"{kind} networks")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_ylabel("error (%)")
    fig.suptitle("Plain and residual networks of 20 and 56 layers, same data and budget (cf. He et al. Fig. 6)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--train-samples", type=int, default=6000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="benchmarks/degradation")
    parser.add_argument("--plot-only", action="store_true", help="redraw OUTPUT.png from OUTPUT.json")
    args = parser.parse_args()
    if args.plot_only:
        with open(args.output + ".json") as f:
            plot(json.load(f)["results"], args.output + ".png")
        return

    from kerasseg.data import shapes

    data = (shapes.load_classification("train", 32, 32, args.train_samples),
            shapes.load_classification("val", 32, 32, 1000))
    results = {}
    for name, depth, shortcut in RUNS:
        print(f"{name}:", flush=True)
        results[name] = train(depth, shortcut, data, args)
    with open(args.output + ".json", "w") as f:
        json.dump({"settings": vars(args), "results": results}, f, indent=2)
    plot(results, args.output + ".png")
    print("\n| network | parameters | final training error | final validation error | best training error | seconds |")
    print("|---|---|---|---|---|---|")
    for name, curve in results.items():
        print(f"| {name} | {curve['parameters']:,} | {100 * curve['train_error'][-1]:.1f}% | "
              f"{100 * curve['val_error'][-1]:.1f}% | {100 * min(curve['train_error']):.1f}% | {curve['seconds']:.0f} |")


if __name__ == "__main__":
    main()
