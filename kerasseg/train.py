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
    scan.json      what the scan found in each file (size, mask values), so later stages check only what changed
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

import os
import sys
import time

from kerasseg import cli, files
from kerasseg.data.reading import DatasetError
from kerasseg.errors import WriteError
from kerasseg.training import _fitting as fitting
from kerasseg.training import _rundata as rundata
from kerasseg.training import arguments, distribute
from kerasseg.training._fitting import TrainingStopped
from kerasseg.training.config import ConfigError, TrainConfig

__all__ = ["TrainConfig", "ConfigError", "TrainingStopped", "train", "parse_args", "main"]


def parse_args(argv=None):
    """The command line's settings as a TrainConfig (kerasseg.training.arguments; with --resume: the run's own)."""
    return arguments.parse_args(argv, description=__doc__)


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
        policy = fitting.mixed_precision() if config.mixed_precision else "float32"
        run_data = rundata.load_data(config, record)
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
        rundata.open_cache(config, run_data, shard)
        state = _last_epoch(run, config)
        model, float_scores = fitting.compiled_model(config, strategy, run_data,
                                              saved=run.file("model.keras") if state else None)
        print(f"{model.name}: {model.count_params():,} parameters, {policy}, strategy {config.strategy} "
              f"({replicas} replica{'s' if replicas > 1 else ''})")
        extra = record.extra if record else {"init_from_scores": float_scores} if float_scores else {}
        _start(run, config, model, strategy, names, None if record else run_data.keys, state, extra)
        run_data.scan.save(run.path)
        first_step = fitting.first_step_callback(started, run_data.scan.seconds)
        fit_started = time.time()
        commit = fitting.fit(config, run, model, strategy, state, run_data, shard, first_step)
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
    scores = rundata.evaluate(best_model, config, run_data)
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
    rundata.predictions_png(best_model, config, run_data, run.file("predictions.png"))
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
