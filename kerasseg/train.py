"""Train a registered segmenter with model.fit: `python -m kerasseg.train`.

    python -m kerasseg.train --model deeplab_v3_plus --backbone mobilenet_v2 --dataset folder:my_data \\
        --image-size 256 --epochs 50 --loss ce+dice --output runs/mine
    python -m kerasseg.train --output runs/mine --resume      # after an interruption
    python -m kerasseg.train --init-from runs/mine/model.keras --quantization-aware --dataset folder:my_data \\
        --image-size 256 --epochs 5 --output runs/mine-qat   # then export.tflite --quantize int8

From Python, the same run is `train(TrainConfig(...))` (kerasseg.training.config: every option a field, same
defaults and checks), which returns the run directory read back (rundir.Run: scores, class names,
split lists, settings, model):

    from kerasseg.train import TrainConfig, train
    run = train(TrainConfig("runs/mine", model="deeplab_v3_plus", backbone="mobilenet_v2",
                            dataset="folder:my_data", image_size=256, epochs=50, loss="ce+dice"))
    run.metrics["miou"], run.class_names, run.load_model()

Writes, into --output DIR:
    model.keras    the best model so far on validation mIoU (pixels in [0, 255] in, float32 logits out),
                   carrying its class names and training size (kerasseg.describe)
    metrics.json   its validation mIoU, per-class IoU and pixel accuracy, and the run's settings
    history.csv    loss and mIoU per epoch (train and validation)
    curves.png     loss and mIoU per epoch
    predictions.png  a few validation images: image | ground truth | prediction
    logs/          TensorBoard (tensorboard --logdir DIR/logs)
    run.json, splits/  the run's record: its arguments, class names and the examples of each split;
                   evaluate, predict and every exporter read their defaults from it
    backup/        the last complete epoch, for --resume

Every epoch ends with a commit (kerasseg.training.rundir): a run killed at any
instant (even SIGKILL) continues with --resume from its last complete epoch,
to the same final epoch count (or a larger --epochs), with the model it saved
(not one rebuilt from the arguments, which a newer kerasseg may build
differently). A new run refuses a DIR that holds another run unless
--overwrite is given; one training at a time holds DIR (a second exits 2
naming the first's process). A loss that becomes NaN or infinite stops
training, naming the epoch and step, and keeps the last good model.keras; a
file that cannot be written (a full disk) stops it too, with the last
complete epoch intact for --resume (both exit status 1).
"""

import contextlib
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from kerasseg import cli, files
from kerasseg.training import arguments, distribute
from kerasseg.training.config import ConfigError, TrainConfig
from kerasseg.data.reading import DatasetError
from kerasseg.errors import InputError, WriteError
from kerasseg.labels import mask_classes

__all__ = ["TrainConfig", "ConfigError", "train", "parse_args", "main"]


def parse_args(argv=None):
    """The command line's settings as a TrainConfig (kerasseg.training.arguments; with --resume: the run's own)."""
    return arguments.parse_args(argv, description=__doc__)


def _mixed_precision():
    import keras

    gpu = False
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        gpu = bool(tf.config.list_physical_devices("GPU"))
    elif keras.backend.backend() == "jax":
        import jax

        gpu = any(d.platform == "gpu" for d in jax.devices())
    policy = "mixed_float16" if gpu else "mixed_bfloat16"
    keras.mixed_precision.set_global_policy(policy)
    return policy


def _build(config, run_data, saved=None):
    """(the model to train, the validation scores of the float model a quantization-aware run starts from or
    None). The model: `saved` (the model.keras of the run being resumed: its architecture is what the
    backed-up weights fit, whatever the arguments would build today), --init-from's (made quantization-aware
    on request, its ranges calibrated on the first training images), or a new one from the registry."""
    from kerasseg import models

    names = run_data.names
    channels = 1 if config.classes == 1 else len(names)  # a binary segmenter: one foreground logit
    if saved:
        try:
            return files.load_keras_model(saved), None
        except InputError as error:
            raise ConfigError("output", config.output, f"cannot be resumed: its model cannot be rebuilt ({error})") \
                from None
    if config.init_from:
        if not os.path.isfile(config.init_from):
            raise ConfigError("init_from", config.init_from, "is not a file")
        model = files.load_keras_model(config.init_from)
        found = model.output_shape[-1]
        if mask_classes(found) != len(names) or config.classes not in (None, found):
            raise ConfigError("init_from", config.init_from, f"has {found} output channel{'s' * (found > 1)} "
                              f"({mask_classes(found)} classes), but {config.dataset} has {len(names)} "
                              f"({', '.join(names)})" + (" and a binary segmenter has one channel"
                                                         if config.classes == 1 else ""))
        if not config.quantization_aware:
            return model, None
        from kerasseg import qat

        float_scores = _evaluate(model, config, run_data)
        try:
            return qat.quantization_aware(model, _calibration_images(config, run_data),
                                          calibration=config.qat_calibration), float_scores
        except ValueError as error:
            raise ConfigError("init_from", config.init_from, f"cannot be made quantization-aware: {error}") from None
    kwargs = dict(config.model_args)
    if config.backbone:
        kwargs["backbone"] = config.backbone
    if config.backbone_weights:
        kwargs["backbone_weights"] = config.backbone_weights
    try:
        return models.create_model(config.model, classes=channels, **kwargs), None
    except (TypeError, ValueError) as error:
        raise ConfigError("model_args", kwargs, f"cannot build {config.model}: {error}") from None


def _optimizer(keras, config, steps):
    if config.schedule == "poly":
        schedule = keras.optimizers.schedules.PolynomialDecay(config.lr, steps, config.lr * 0.01, power=0.9)
    else:
        schedule = keras.optimizers.schedules.CosineDecay(config.lr, decay_steps=steps, alpha=0.01)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=0.9)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(schedule, weight_decay=1e-4)
    return keras.optimizers.Adam(schedule)


def _split_lists(config, record):
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
class _RunData:
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


def _load_data(config, record):
    """The run's _RunData (without its cache: `_open_cache`). Every example is scanned here, before any
    training, and every bad file of either split named at once; a resumed run scans only the files that
    changed since its scan (DIR/scan.json)."""
    from kerasseg import data
    from kerasseg.data.scan import Scan, scan

    recorded = _split_lists(config, record)
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
    return _RunData(train_examples, val_examples, names, keys, scanned)


def _open_cache(config, run_data, shard):
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


def _open_run(config, worker):
    """The run directory (worker 0 of a multi-worker run writes the results, each other its own files) and,
    when resuming, its record. A directory that exists is locked for this process at once (RunDir.lock);
    a new run refuses one that holds another run."""
    from kerasseg.training import rundir

    output = os.path.abspath(config.output)
    if worker:
        output = os.path.join(output, f"worker-{worker}")
    run = rundir.RunDir(output)
    if os.path.isdir(output):  # (a new directory is made and locked when the run writes its record)
        _take(run, config)
    return run, rundir.Run.read(output) if config.resume else None


def _take(run, config):
    """Locks `run` for this process; then, holding it, refuses a directory that holds another run (unless
    resuming or --overwrite)."""
    run.lock()
    if not config.resume and not config.overwrite and run.holds_a_run():
        run.unlock()
        raise ConfigError("output", run.path, "holds another run: continue it ({resume}), replace it ({overwrite}), "
                          "or choose another {output}")


def _compiled_model(config, strategy, run_data, saved=None):
    """(the compiled model, the float model's scores of a quantization-aware run: see _build)."""
    import keras

    from kerasseg import losses, metrics
    from kerasseg.described import describe
    from kerasseg.inference import resize_rule

    names = run_data.names
    steps = -(-len(run_data.train) // config.batch_size) * config.epochs
    with distribute.scope(strategy):
        model, float_scores = _build(config, run_data, saved)
        # model.keras carries its labels, training size and how training resized (its inference geometry)
        model = describe(model, names, config.image_size, resize=resize_rule(config.augment))
        model.compile(optimizer=_optimizer(keras, config, steps),
                      loss=losses.SegmentationLoss(config.loss, config.class_weights),
                      metrics=metrics.segmentation_metrics(model.outputs[0].shape[-1]))
    return model, float_scores


def _last_epoch(run, config):
    """The last complete epoch's state when resuming (its files published again first: a kill may have
    interrupted that), or None: training starts from the first epoch."""
    state = run.state() if config.resume else None
    if state:
        run.publish(state)
    return state


def _start(run, config, model, strategy, names, keys, state, extra):
    """Writes the record (`keys`: the split lists of a new run; `extra`: more it keeps, such as the float
    model's scores), then restores the last complete epoch `state` into `model` when resuming."""
    _take(run, config)
    if config.overwrite:
        run.clear()
    run.write_record(config.recorded(), names, keys, extra)
    if state:
        with distribute.scope(strategy):
            try:
                run.restore(model, state)
            except ValueError as error:  # weights of another architecture (model.keras lost or replaced)
                raise ConfigError("output", run.path, f"cannot be resumed: backup/{state['weights']} does not fit "
                                  f"the model ({str(error).splitlines()[0]})") from None
        print(f"resuming {config.output} after epoch {state['epoch'] + 1} of {config.epochs}")
    elif config.resume:
        print(f"resuming {config.output}: no epoch had completed, so training starts from the first")


def _calibration_images(config, run_data, count=64):
    """The first `count` training images at the training size, unaugmented: where a quantization-aware
    model's ranges start (as post-training calibration would measure them)."""
    from kerasseg.data.pipeline import failures, make_dataset

    reader = run_data.reader(run_data.train[:count])
    with failures(reader):
        return np.concatenate([images for images, _ in make_dataset(reader, config.image_size,
                                                                    config.batch_size).as_numpy_iterator()])


def _geometry(config):
    """The run's inference geometry (kerasseg.inference): how validation, and every later stage, prepare an
    image as this training showed them to the model."""
    from kerasseg.inference import Geometry, resize_rule

    return Geometry(resize_rule(config.augment), config.image_size)


def _evaluate(model, config, run_data, examples=None):
    """Scores of `model` on `examples` (default: the validation split) in the run's geometry, streamed."""
    from kerasseg import metrics
    from kerasseg.data.pipeline import decoded, failures
    from kerasseg.inference import Inference

    reader = run_data.reader(run_data.val if examples is None else examples)
    with failures(reader):
        cm = Inference(model, _geometry(config), batch_size=config.batch_size).confusion(
            decoded(reader, scan=run_data.scan).as_numpy_iterator(), len(run_data.names))
    return metrics.scores(cm, run_data.names)


def _validation(config, run_data, reader, strategy, interrupted=()):
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
                run = Inference(model, _geometry(config), batch_size=config.batch_size, predict=predict)
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


def _datasets(config, run_data, shard):
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


def _first_step_callback(started, scan_seconds):
    """A callback that notes (`.seconds`) and says the seconds from `started` to the end of the first step."""
    import keras

    class FirstStep(keras.callbacks.Callback):
        seconds = None

        def on_train_batch_end(self, batch, logs=None):
            if self.seconds is None:
                self.seconds = time.time() - started
                print(f"first training step {self.seconds:.1f} s after the start (the scan took {scan_seconds:.1f} s)",
                      flush=True)

    return FirstStep()


def _fit(config, run, model, strategy, state, run_data, shard, first_step):
    """Trains from the epoch after `state`, committing every epoch; returns the commit callback. A file that
    fails to decode stops the run at its last complete epoch (a DatasetError naming the file)."""
    import keras

    from kerasseg.training import rundir
    from kerasseg.data.pipeline import failures

    train_data, steps, readers = _datasets(config, run_data, shard)
    interrupted = []  # (Ctrl-C: the epoch under way is neither validated nor committed)
    commit = rundir.EpochCommit(run, *((state["history"], state["best"]) if state else ()),
                                failed=lambda: bool(interrupted) or any(reader.failure for reader in readers))
    validation = _validation(config, run_data, readers[1], strategy, interrupted)
    callbacks = [validation, commit, keras.callbacks.TensorBoard(run.file("logs")), first_step]
    if config.patience:
        callbacks.append(keras.callbacks.EarlyStopping("val_miou", mode="max", patience=config.patience))
    initial_epoch = state["epoch"] + 1 if state else 0
    if initial_epoch < config.epochs:
        with distribute.fit_scope(model, strategy), failures(*readers), _interruptible(model, interrupted):
            model.fit(train_data, epochs=config.epochs, initial_epoch=initial_epoch,
                      callbacks=callbacks, **steps,
                      shuffle=False,  # the tf.data pipeline shuffles, seeded
                      verbose=1 if sys.stdout.isatty() else 2)
    if commit.nonfinite:
        epoch, step, value = commit.nonfinite
        kept = "the last good model.keras is kept" if os.path.isfile(run.file("model.keras")) else \
            "no epoch had completed, so there is no model.keras"
        raise TrainingStopped(f"the loss became {value} at epoch {epoch}, step {step}: training stopped; {kept}. "
                               "Try a lower --lr (or --class-weights closer to 1)")
    return commit


@contextlib.contextmanager
def _interruptible(model, interrupted):
    """Ctrl-C (SIGINT) while `model` trains stops it after the step under way (model.stop_training), then raises
    KeyboardInterrupt once fit has returned, the epoch it cut short left uncommitted; a second Ctrl-C stops at
    once. (A KeyboardInterrupt raised wherever the signal lands can be swallowed: inside a garbage-collection
    callback, training went on to its end.) In the main thread only, where Python delivers signals."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        interrupted.append(signum)
        model.stop_training = True
        signal.signal(signal.SIGINT, previous)

    previous = signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted:
        raise KeyboardInterrupt


def _stopped(run, config, error, fix=None):
    """The words for a run stopped midway by `error`: what it keeps, and (`fix` first) how to continue it."""
    import shlex

    state = run.state()
    if not state:
        return f"{error}; training stopped, no epoch had completed"
    return (f"{error}; training stopped, nothing was lost: epoch {state['epoch'] + 1} of {config.epochs} is "
            f"complete in {run.path} (model.keras, history.csv, backup/); {f'{fix}, then ' if fix else ''}continue "
            f"it with python -m kerasseg.train --output {shlex.quote(os.fspath(config.output))} --resume")


def train(config):
    """Trains as `config` (a TrainConfig) says, into the run directory `config.output`; returns its
    rundir.Run (run.metrics: the metrics.json report), or None in a multi-worker run's other workers.

    Bad settings raise ConfigError (a ValueError) naming the setting and its value, before anything is
    written; a loss that becomes NaN or a file that cannot be written raise TrainingStopped."""
    strategy, replicas, worker = distribute.strategy_for(config)
    import keras

    from kerasseg.training import rundir

    run, record = _open_run(config, worker)
    started = time.time()
    try:
        keras.utils.set_random_seed(config.seed)
        policy = _mixed_precision() if config.mixed_precision else "float32"
        run_data = _load_data(config, record)
        names = run_data.names
        if config.class_weights is not None and len(config.class_weights) != len(names):
            raise ConfigError("class_weights", config.class_weights, f"has {len(config.class_weights)} values for "
                              f"{len(names)} classes ({', '.join(names)}): give one per class")
        shard = distribute.input_shard(config, strategy)
        print(f"{config.dataset}: {len(run_data.train)} training and {len(run_data.val)} validation images, "
              f"{len(names)} classes ({', '.join(names)}); training crops "
              f"{config.image_size[0]}x{config.image_size[1]}" +
              (f"; this worker reads {len(run_data.train[shard[0]::shard[1]])} of the training images"
               if shard[1] > 1 else ""))
        _open_cache(config, run_data, shard)
        state = _last_epoch(run, config)
        model, float_scores = _compiled_model(config, strategy, run_data,
                                              saved=run.file("model.keras") if state else None)
        print(f"{model.name}: {model.count_params():,} parameters, {policy}, strategy {config.strategy} "
              f"({replicas} replica{'s' if replicas > 1 else ''})")
        extra = record.extra if record else {"init_from_scores": float_scores} if float_scores else {}
        _start(run, config, model, strategy, names, None if record else run_data.keys, state, extra)
        run_data.scan.save(run.path)
        first_step = _first_step_callback(started, run_data.scan.seconds)
        fit_started = time.time()
        commit = _fit(config, run, model, strategy, state, run_data, shard, first_step)
        if worker:
            return None
        timings = {"train_seconds": round(time.time() - fit_started, 1),
                   "scan_seconds": round(run_data.scan.seconds, 2),
                   "time_to_first_step": None if first_step.seconds is None else round(first_step.seconds, 2)}
        _finish(config, run, model, commit, run_data, extra.get("init_from_scores"), policy, replicas, timings)
        return rundir.Run.read(run.path)
    except WriteError as error:
        raise TrainingStopped(_stopped(run, config, error, "make room")) from None
    except DatasetError as error:  # a file the scan could not judge (damaged inside, or changed since), met now
        raise DatasetError(_stopped(run, config, error, "replace the file")) from None
    finally:
        run.unlock()


def _finish(config, run, model, commit, run_data, float_scores, policy, replicas, timings):
    """Scores the best model on the validation split and writes metrics.json and predictions.png."""
    import keras

    if config.strategy == "multiworker" and keras.backend.backend() == "jax":  # the final evaluation runs here alone
        keras.distribution.set_distribution(None)
    names = run_data.names
    best_model = keras.saving.load_model(run.file("model.keras"))
    scores = _evaluate(best_model, config, run_data)
    best_epoch = commit.best["epoch"]
    report = {
        "model": best_model.name if config.init_from else config.model, "model_args": config.model_args,
        "init_from": config.init_from, "quantization_aware": config.quantization_aware,
        "qat_calibration": config.qat_calibration if config.quantization_aware else None, "backbone": config.backbone,
        "dataset": config.dataset,
        "split": "val", "image_size": list(config.image_size), "classes": list(names), **scores,
        **({"foreground_iou": scores["per_class_iou"][names[1]]} if best_model.outputs[0].shape[-1] == 1 else {}),
        "init_from_miou": float_scores["miou"] if float_scores else None,
        "init_from_per_class_iou": float_scores["per_class_iou"] if float_scores else None,
        "best_epoch": None if best_epoch is None else int(best_epoch) + 1, "epochs": config.epochs,
        "epochs_run": len(commit.rows), "optimizer_steps": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
        "batch_size": config.batch_size, "train_samples": len(run_data.train),
        "loss": config.loss, "optimizer": config.optimizer, "schedule": config.schedule, "lr": config.lr,
        "mixed_precision": policy, "strategy": config.strategy, "replicas": replicas, "seed": config.seed,
        "cache": "none" if run_data.cache is None else "memory" if config.cache == "auto" else config.cache,
        **timings,
    }
    files.write_text_atomic(run.file("metrics.json"), files.json_text(report))
    _predictions_png(best_model, config, run_data, run.file("predictions.png"))
    per_class = ", ".join(f"{k} {v:.3f}" for k, v in scores["per_class_iou"].items() if v is not None)
    print(f"validation mIoU {scores['miou']:.4f} ({per_class}); pixel accuracy {scores['pixel_accuracy']:.4f}")
    if float_scores:
        drop = 100 * (float_scores["miou"] - scores["miou"])
        print(f"the float model it fine-tuned (--init-from {config.init_from}): validation mIoU "
              f"{float_scores['miou']:.4f}; the quantization-aware model {'loses' if drop > 0 else 'gains'} "
              f"{abs(drop):.2f} points" + (f" (--lr {config.lr:g}: a lower one keeps more of the float model)"
                                           if drop > 1 else ""))
    print(f"wrote {run.path}/model.keras (epoch {report['best_epoch']}), metrics.json, history.csv, curves.png, "
          "predictions.png, logs/")
    return report


def _predictions_png(model, config, run_data, path, count=4):
    """A few validation images at their own sizes: image | ground truth | prediction (the run's geometry) |
    overlay."""
    from kerasseg import plots
    from kerasseg.data.pipeline import decoded, failures
    from kerasseg.inference import Inference

    reader = run_data.reader(run_data.val[:count])
    with failures(reader):
        pairs = list(decoded(reader).as_numpy_iterator())
    predicted = Inference(model, _geometry(config)).masks(image for image, _ in pairs)
    rows = [[image, plots.colorize(mask), plots.colorize(p), plots.overlay(image, p)]
            for (image, mask), p in zip(pairs, predicted)]
    plots.save_grid(rows, ["image", "ground truth", "prediction", "overlay"], path,
                    [f"val #{i}" for i in range(len(rows))])


class TrainingStopped(Exception):
    """Training stopped before its last epoch: the loss became NaN or infinite, or a file could not be
    written (exit status 1)."""


def main(argv=None):
    config = None
    try:
        config = parse_args(argv)
        train(config)
    except ConfigError as error:
        raise cli.UsageError(arguments.flag_words(error)) from None
    except TrainingStopped as error:
        print(f"python -m kerasseg.train: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # (Ctrl-C: what is kept, and how to go on, without TensorFlow's traceback)
        if config is None:
            raise
        from kerasseg.training import rundir

        words = _stopped(rundir.RunDir(os.path.abspath(config.output)), config, "interrupted (Ctrl-C)")
        print(f"python -m kerasseg.train: {words}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
