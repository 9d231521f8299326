"""The run directory: the record of a training run that every later stage reads, and the epoch commits
that let a killed run continue.

    DIR/run.json         {"arguments": the training arguments, "class_names": [...]}, written first
    DIR/splits/S.txt     the keys (file stems, or indices) of each split S the run used: train, val, test
    DIR/scan.json        what the scan of the examples found (kerasseg.data.scan), for --resume and evaluate
    DIR/model.keras      the best model so far on validation mIoU
    DIR/history.csv      one row per complete epoch (curves.png is drawn from it)
    DIR/backup/          the last complete epoch: epoch-N.weights.h5 (weights and optimizer state),
                         best-N.keras (a new best, until it is published) and state.json, the marker
    DIR/.lock            held (flock) by the one training that writes DIR, and naming its process

An epoch ends in two phases. It is staged: the weights and any new best model are written under
backup/ (temporary name, then os.replace), and state.json, which holds the epoch number, every history
row and the best score, is renamed into place last: that rename is the instant the epoch is complete.
Then it is published: the staged best becomes model.keras, history.csv and curves.png are rewritten
from state.json. Publishing is idempotent, so `--resume` first publishes the last complete epoch again,
whatever instant the previous process died at, then continues after it: no history row is lost or
repeated, and model.keras is only ever replaced by a complete better model.
"""

import csv
import errno
import fcntl
import io
import json
import os
import shutil
import signal
import socket
from dataclasses import dataclass

import keras

from kerasseg import files
from kerasseg.errors import InputError, WriteError

SPLITS = ("train", "val", "test")
RUN_FILES = ("run.json", "splits", "scan.json", "model.keras", "metrics.json", "history.csv", "curves.png",
             "predictions.png", "backup", "logs")
# The instants of an epoch's end at which KERASSEG_CRASH_AT="POINT:EPOCH" kills the process with SIGKILL,
# in the order they happen: the resume tests kill a real run at each of them.
CRASH_POINTS = ("weights-written", "weights", "best", "state", "model", "history")


def crash_point(point, epoch):
    if os.environ.get("KERASSEG_CRASH_AT") == f"{point}:{epoch}":
        os.kill(os.getpid(), signal.SIGKILL)


def _json_or_none(path):
    """The JSON file at `path`, or None where there is none."""
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


@dataclass
class Run:
    """A training run as its directory records it, read once: its arguments (dataset, image size, seed, ...;
    kerasseg.training.config.TrainConfig.resumed makes them a config again), class names, split lists, `extra`
    facts it keeps for later (the float model's scores of a quantization-aware run), its model and its
    scores (`metrics`, metrics.json).
    kerasseg.train.train returns one; evaluate, predict and the exporters' command lines read one beside
    the model they are given (Run.of_model)."""

    directory: str
    arguments: dict
    class_names: tuple
    extra: dict = None

    @classmethod
    def read(cls, directory):
        """The record in `directory`, or None when there is none."""
        path = os.path.join(directory, "run.json")
        if not os.path.isfile(path):
            return None
        try:
            with open(path) as f:
                saved = json.load(f)
            extra = {k: v for k, v in saved.items() if k not in ("arguments", "class_names")}
            return cls(os.fspath(directory), saved["arguments"], tuple(saved["class_names"]), extra)
        except (ValueError, KeyError, TypeError) as error:
            raise InputError(f"{path} is not a kerasseg run record ({type(error).__name__}: {error})") from None

    @classmethod
    def of_model(cls, model_path):
        """The record of the run that wrote `model_path` (run.json beside it), or None."""
        return cls.read(os.path.dirname(os.path.abspath(os.fspath(model_path))))

    @property
    def dataset(self):
        return self.arguments["dataset"]

    @property
    def image_size(self):
        return tuple(self.arguments["image_size"])

    @property
    def model_path(self):
        return os.path.join(self.directory, "model.keras")

    def load_model(self):
        """The run's best model (kerasseg.files.load_keras_model)."""
        return files.load_keras_model(self.model_path)

    @property
    def metrics(self):
        """metrics.json: the best model's validation scores and the run's settings (None until it has ended)."""
        return _json_or_none(os.path.join(self.directory, "metrics.json"))

    def split_keys(self, split):
        """The keys the run used for `split`, or None when it recorded none."""
        path = os.path.join(self.directory, "splits", f"{split}.txt")
        if not os.path.isfile(path):
            return None
        return files.read_lines(path)  # one key per line, exactly: a file name may hold spaces


class RunDir:
    """The files of one training run in `path` (see the module docstring)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.backup = os.path.join(self.path, "backup")
        self._lock = None

    def lock(self):
        """Takes the directory for this process, for its whole life: an exclusive flock on DIR/.lock, which
        records the holder's pid and host. The kernel drops the lock when its holder dies (kill -9 too), so a
        dead holder's lock is simply taken over; a live one is an InputError naming its process."""
        if self._lock is not None:
            return
        files.ensure_output_dir(self.file(".lock"))
        path = self.file(".lock")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            raise WriteError(path, error) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = (os.pread(fd, 200, 0).decode(errors="replace").splitlines() or [""])[0] or \
                "a process that is starting"
            os.close(fd)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise WriteError(path, error) from None
            raise InputError(f"{self.path} is in use by another training ({holder}): wait for it to end, or "
                             "write this run into another directory") from None
        holder = f"pid {os.getpid()} on {socket.gethostname()}\n".encode()
        os.pwrite(fd, holder, 0)  # then cut: a reader sees a whole first line, the last holder's or this one
        os.ftruncate(fd, len(holder))
        self._lock = fd

    def unlock(self):
        """Lets another training take the directory (a process that trains again, or goes on after training)."""
        if self._lock is not None:
            os.close(self._lock)  # (closing the descriptor releases the flock)
            self._lock = None

    def file(self, name):
        return os.path.join(self.path, name)

    def holds_a_run(self):
        return any(os.path.exists(self.file(name)) for name in ("run.json", "history.csv", "model.keras", "backup"))

    def clear(self):
        """Removes an earlier run's files (--overwrite); other files in the directory stay."""
        for name in RUN_FILES:
            path = self.file(name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)

    def write_record(self, arguments, class_names, splits=None, extra=None):
        """run.json (with `extra`'s keys beside the arguments and class names), and splits/{train,val,test}.txt
        for each split given ({split: keys})."""
        for split, keys in (splits or {}).items():
            if keys is not None:
                os.makedirs(self.file("splits"), exist_ok=True)
                files.write_lines_atomic(self.file(os.path.join("splits", f"{split}.txt")), keys)
        record = {"arguments": arguments, "class_names": list(class_names), **(extra or {})}
        files.write_text_atomic(self.file("run.json"), json.dumps(record, indent=2) + "\n")

    def state(self):
        """The last complete epoch's state.json, or None when no epoch completed."""
        return _json_or_none(os.path.join(self.backup, "state.json"))

    def commit(self, model, epoch, rows, best, new_best):
        """Stages epoch `epoch` (weights, a new best model), marks it complete, then publishes it."""
        os.makedirs(self.backup, exist_ok=True)

        def save_weights(tmp):
            model.save_weights(tmp)
            crash_point("weights-written", epoch)

        weights = f"epoch-{epoch}.weights.h5"
        files.atomic_write(os.path.join(self.backup, weights), save_weights)
        crash_point("weights", epoch)
        staged = None
        if new_best:
            staged = f"best-{epoch}.keras"
            files.atomic_write(os.path.join(self.backup, staged), model.save)
            crash_point("best", epoch)
        state = {"epoch": epoch, "weights": weights, "best": {**best, "staged": staged}, "history": rows}
        files.write_text_atomic(os.path.join(self.backup, "state.json"), json.dumps(state, indent=2) + "\n")
        crash_point("state", epoch)
        self.publish(state)

    def publish(self, state):
        """model.keras, history.csv and curves.png from a complete epoch's state; idempotent."""
        from kerasseg import plots

        staged = state["best"].get("staged")
        if staged and os.path.isfile(os.path.join(self.backup, staged)):
            os.replace(os.path.join(self.backup, staged), self.file("model.keras"))
        crash_point("model", state["epoch"])
        rows = state["history"]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
        writer.writeheader()
        writer.writerows(rows)
        files.write_text_atomic(self.file("history.csv"), buffer.getvalue())
        crash_point("history", state["epoch"])
        plots.save_curves(rows, self.file("curves.png"))
        for name in os.listdir(self.backup):  # earlier epochs' files, and any a killed process left half-written
            if name not in ("state.json", state["weights"]):
                os.remove(os.path.join(self.backup, name))

    def restore(self, model, state):
        """Loads the complete epoch's weights and optimizer state into the compiled `model`."""
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(os.path.join(self.backup, state["weights"]))


class EpochCommit(keras.callbacks.Callback):
    """Commits every epoch to a RunDir (its history row, a new best model, the weights), and stops training
    when the loss becomes NaN or infinite, or once `failed()` says a file could not be read (kerasseg.data.
    pipeline.ExampleReader), before anything of that epoch is written."""

    def __init__(self, run, rows=(), best=None, failed=lambda: False):
        super().__init__()
        self.run, self.rows, self.failed = run, list(rows), failed
        self.best = best or {"epoch": None, "val_miou": -1.0}
        self.nonfinite = None  # (epoch, step, loss) once the loss is not finite

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not float("-inf") < float(loss) < float("inf"):
            self.nonfinite = (self.epoch + 1, batch + 1, float(loss))
            self.model.stop_training = True
        if self.failed():
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.nonfinite or self.failed():  # (a file that failed in validation stops training here)
            self.model.stop_training = True
            return
        row = {"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}}
        self.rows = [r for r in self.rows if int(r["epoch"]) < epoch] + [row]
        new_best = row.get("val_miou", -1.0) > self.best["val_miou"]
        if new_best:
            self.best = {"epoch": epoch, "val_miou": row["val_miou"]}
        self.run.commit(self.model, epoch, self.rows, {k: self.best[k] for k in ("epoch", "val_miou")}, new_best)
