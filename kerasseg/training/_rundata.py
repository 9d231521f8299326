"""A run's data, below kerasseg.train: the examples of each split (listed and scanned, not decoded), the cache of
decoded ones, the training pipeline, and every scoring in the run's inference geometry (each epoch's validation,
the best model's final scores, the predictions picture). Private to kerasseg.train.
"""

from dataclasses import dataclass

import numpy as np

from kerasseg.errors import InputError
from kerasseg.training import distribute
from kerasseg.training.config import ConfigError


def split_lists(config, record):
    """{split: keys} to train and validate on: the resumed run's; else, for --init-from a model whose run
    trained on this dataset, that run's, so that its validation and test images stay held out; else none
    (the dataset's own splits: a folder's seeded one uses --seed)."""
    from kerasseg import data
    from kerasseg.training import rundir

    if record is None and config.init_from:
        origin = rundir.Run.of_model(config.init_from)
        if origin is not None and data.same_dataset(origin.dataset, config.dataset):
            print(f"the splits of {origin.directory}, where --init-from was trained: its held-out images stay "
                  "held out")
            record = origin
    return {s: record.split_keys(s) for s in ("train", "val", "test")} if record else {}


@dataclass
class RunData:
    """A run's data as it streams: its training and validation examples (listed and scanned, not decoded), the
    class names, every split's keys (what the run records), the scan, and the cache of decoded examples."""

    train: list
    val: list
    names: tuple
    keys: dict
    scan: object
    cache: object = None

    def reader(self, examples):
        from kerasseg.data.pipeline import ExampleReader

        return ExampleReader(examples, len(self.names), self.cache)


def load_data(config, record):
    """The run's RunData (without its cache: `open_cache`). Every example is scanned here, before any
    training, and every bad file of either split named at once; a resumed run scans only the files that
    changed since its scan (DIR/scan.json)."""
    from kerasseg import data
    from kerasseg.data.scan import Scan, scan

    recorded = split_lists(config, record)
    try:
        source = data.open_source(config.dataset, config.data_dir, config.classes, config.seed, config.image_size,
                                  config.binary_masks)
        train_examples, names = data.list_examples(config.dataset, "train", config.image_size, config.train_samples,
                                                   classes=config.classes, keys=recorded.get("train"), source=source)
        val_examples, _ = data.list_examples(config.dataset, "val", config.image_size, keys=recorded.get("val"),
                                             source=source)
        keys = {"train": [e.key for e in train_examples], "val": [e.key for e in val_examples],
                "test": recorded.get("test") or source.keys("test")}
        known = Scan.merged(Scan.load(record.directory) if record else None, getattr(source, "scanned", None))
        scanned = scan(train_examples + val_examples, len(names), known)
    except data.ClassesError as error:
        raise ConfigError("classes", config.classes, error.problem) from None
    except data.DatasetError as error:  # (the dataset's own words: it names the file or the folder)
        raise ConfigError("dataset", config.dataset, f"cannot be read: {error}") from None
    if record and scanned.entries:
        print(f"the scan recorded in {record.directory}: {scanned.checked} of {len(scanned.entries)} examples "
              "changed since, and were checked again")
    return RunData(train_examples, val_examples, names, keys, scanned)


def open_cache(config, run_data, shard):
    """Sets the run's cache of decoded examples (config.cache; "auto" decides by what this process decodes:
    its share of the training split, and the validation split) and says which, and why."""
    from kerasseg.data import pipeline

    index, count, _ = shard
    mine = run_data.train[index::count] + run_data.val[index::count]
    try:
        run_data.cache, note = pipeline.open_cache(config.cache, mine, run_data.scan.decoded_bytes(mine))
    except InputError as error:
        raise ConfigError("cache", config.cache, f"cannot be used: {error}") from None
    print(note)


def calibration_images(config, run_data, count=64):
    """The first `count` training images at the training size, unaugmented: where a quantization-aware
    model's ranges start (as post-training calibration would measure them)."""
    from kerasseg.data.pipeline import failures, make_dataset

    reader = run_data.reader(run_data.train[:count])
    with failures(reader):
        return np.concatenate([images for images, _ in make_dataset(reader, config.image_size,
                                                                    config.batch_size).as_numpy_iterator()])


def geometry(config):
    """The run's inference geometry (kerasseg.geometry): how validation, and every later stage, prepare an
    image as this training showed them to the model."""
    from kerasseg.geometry import Geometry, resize_rule

    return Geometry(resize_rule(config.augment), config.image_size)


def evaluate(model, config, run_data, examples=None):
    """Scores of `model` on `examples` (default: the validation split) in the run's geometry, streamed."""
    from kerasseg import metrics
    from kerasseg.data.pipeline import decoded, failures
    from kerasseg.inference import Inference

    reader = run_data.reader(run_data.val if examples is None else examples)
    with failures(reader):
        cm = Inference(model, geometry(config), batch_size=config.batch_size).confusion(
            decoded(reader, scan=run_data.scan).as_numpy_iterator(), len(run_data.names))
    return metrics.scores(cm, run_data.names)


def validation(config, run_data, reader, strategy, interrupted=()):
    """The validation of every epoch, in the run's geometry (kerasseg.inference: aspect kept, each label at its
    own resolution): a Keras callback that adds val_loss, val_miou (and a binary segmenter's
    val_foreground_iou) to the epoch's logs, before the callbacks after it read them. val_loss is the run's
    loss at the size each image runs at (its mask resized there, nearest). In a multi-worker run each
    process scores its share of the split (`reader`) and the sums are added up across them
    (distribute.all_sum), so that every process decides alike (best epoch, early stopping)."""
    import keras

    from kerasseg import metrics
    from kerasseg.data.pipeline import decoded
    from kerasseg.inference import Inference

    names = run_data.names

    class Validation(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if interrupted:  # (an epoch cut short by Ctrl-C: not committed, so not validated)
                return
            model, loss = self.model, self.model.loss

            def image_loss(labels, logits):
                return keras.ops.convert_to_numpy(loss(labels[None].astype("int32"), logits[None]))

            with distribute.local_inference(model, strategy) as predict:
                run = Inference(model, geometry(config), batch_size=config.batch_size, predict=predict)
                cm, mean_loss = run.confusion(decoded(reader, scan=run_data.scan).as_numpy_iterator(), len(names),
                                              loss=image_loss)
            cm = distribute.all_sum(cm, strategy, config)
            total, count = distribute.all_sum(np.array([(mean_loss or 0.0) * len(reader), len(reader)]), strategy,
                                              config)
            scores = metrics.scores(cm, names)
            logs = logs if logs is not None else {}
            logs["val_loss"] = float(total / max(count, 1))
            logs["val_miou"] = scores["miou"]
            if model.outputs[0].shape[-1] == 1:
                logs["val_foreground_iou"] = scores["per_class_iou"][names[1]] or 0.0

    return Validation()


def datasets(config, run_data, shard):
    """(training data, fit's step arguments, the readers of the training and validation examples). `shard`:
    (index, count, batch size): the share of the examples this process reads (every count-th from index: a
    multi-worker run's workers read disjoint files, of both splits) and its pipeline's batch size
    (distribute.input_shard)."""
    from kerasseg.data.pipeline import make_dataset

    index, count, batch_size = shard
    train = run_data.reader(run_data.train[index::count])
    val = run_data.reader(run_data.val[index::count])
    train_data = make_dataset(train, config.image_size, batch_size, shuffle=True, seed=config.seed,
                              augment=None if config.augment == "none" else config.augment, sharded=count > 1,
                              scan=run_data.scan)
    if config.strategy != "multiworker":
        return train_data, {}, (train, val)
    # every process must run the same number of steps, each giving its part (config.batch_size / count) of
    # every global batch: whole training batches from a repeated dataset. The step count is given: on
    # TensorFlow a worker's batches are split into its steps' parts after Keras counted them.
    return train_data.repeat(), {"steps_per_epoch": max(1, len(run_data.train) // config.batch_size)}, (train, val)


def predictions_png(model, config, run_data, path, count=4):
    """A few validation images at their own sizes: image | ground truth | prediction (the run's geometry) |
    overlay."""
    from kerasseg import plots
    from kerasseg.data.pipeline import decoded, failures
    from kerasseg.inference import Inference

    reader = run_data.reader(run_data.val[:count])
    with failures(reader):
        pairs = list(decoded(reader).as_numpy_iterator())
    predicted = Inference(model, geometry(config)).masks(image for image, _ in pairs)
    rows = [[image, plots.colorize(mask), plots.colorize(p), plots.overlay(image, p)]
            for (image, mask), p in zip(pairs, predicted)]
    plots.save_grid(rows, ["image", "ground truth", "prediction", "overlay"], path,
                    [f"val #{i}" for i in range(len(rows))])
