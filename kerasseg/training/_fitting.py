"""The model a run trains and the fit that trains it, below kerasseg.train: built new, loaded to resume, or
--init-from's made quantization-aware; compiled with the run's loss, metrics and schedule; fitted with the
epoch commit, the validation and Ctrl-C stopping after the step under way. Private to kerasseg.train.
"""

import contextlib
import os
import sys
import time

from kerasseg import files
from kerasseg.errors import InputError
from kerasseg.labels import mask_classes
from kerasseg.training import _rundata as rundata
from kerasseg.training import distribute
from kerasseg.training.config import ConfigError


def mixed_precision():
    """Sets Keras' mixed-precision policy for this machine (float16 on a GPU, bfloat16 elsewhere); returns it."""
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


def build(config, run_data, saved=None):
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

        float_scores = rundata.evaluate(model, config, run_data)
        try:
            return qat.quantization_aware(model, rundata.calibration_images(config, run_data),
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


def optimizer(keras, config, steps):
    if config.schedule == "poly":
        schedule = keras.optimizers.schedules.PolynomialDecay(config.lr, steps, config.lr * 0.01, power=0.9)
    else:
        schedule = keras.optimizers.schedules.CosineDecay(config.lr, decay_steps=steps, alpha=0.01)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=0.9)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(schedule, weight_decay=1e-4)
    return keras.optimizers.Adam(schedule)


def compiled_model(config, strategy, run_data, saved=None):
    """(the compiled model, the float model's scores of a quantization-aware run: see build)."""
    import keras

    from kerasseg import losses, metrics
    from kerasseg.described import describe
    from kerasseg.geometry import resize_rule

    names = run_data.names
    steps = -(-len(run_data.train) // config.batch_size) * config.epochs
    with distribute.scope(strategy):
        model, float_scores = build(config, run_data, saved)
        # model.keras carries its labels, training size and how training resized (its inference geometry)
        model = describe(model, names, config.image_size, resize=resize_rule(config.augment))
        model.compile(optimizer=optimizer(keras, config, steps),
                      loss=losses.SegmentationLoss(config.loss, config.class_weights),
                      metrics=metrics.segmentation_metrics(model.outputs[0].shape[-1]))
        # the optimizer's variables made now, not in the first step: Keras on TensorFlow without a strategy
        # makes them while tracing that step, and TensorFlow then traces it a second time (the demo's first
        # step, from the start: 14-15 s -> 8-9 s; unet_backbone_tiny's first train_on_batch: 23 s -> 11 s)
        model.optimizer.build(model.trainable_variables)
    return model, float_scores


def first_step_callback(started, scan_seconds):
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


def fit(config, run, model, strategy, state, run_data, shard, first_step):
    """Trains from the epoch after `state`, committing every epoch; returns the commit callback. A file that
    fails to decode stops the run at its last complete epoch (a DatasetError naming the file)."""
    import keras

    from kerasseg.training import rundir
    from kerasseg.data.pipeline import failures

    train_data, steps, readers = rundata.datasets(config, run_data, shard)
    interrupted = []  # (Ctrl-C: the epoch under way is neither validated nor committed)
    commit = rundir.EpochCommit(run, *((state["history"], state["best"]) if state else ()),
                                failed=lambda: bool(interrupted) or any(reader.failure for reader in readers))
    validation = rundata.validation(config, run_data, readers[1], strategy, interrupted)
    callbacks = [validation, commit, keras.callbacks.TensorBoard(run.file("logs")), first_step]
    if config.patience:
        callbacks.append(keras.callbacks.EarlyStopping("val_miou", mode="max", patience=config.patience))
    initial_epoch = state["epoch"] + 1 if state else 0
    if initial_epoch < config.epochs:
        with distribute.fit_scope(model, strategy), failures(*readers), interruptible(model, interrupted):
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
def interruptible(model, interrupted):
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


class TrainingStopped(Exception):
    """Training stopped before its last epoch: the loss became NaN or infinite, or a file could not be
    written (exit status 1)."""
