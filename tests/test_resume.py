"""A training run killed at any instant (SIGKILL included) continues with --resume from its last complete
epoch: no traceback, no missing or duplicated history row, the best model.keras never lost."""

import csv
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run_cli

TRAIN = ["--model", "unet_tiny", "--image-size", "32", "--batch-size", "8"]


def _history(run):
    if not (run / "history.csv").exists():
        return []
    with open(run / "history.csv") as f:
        return [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(f)]


def _epochs(run):
    return [int(row["epoch"]) for row in _history(run)]


def _start(args, env=None):
    return subprocess.Popen([sys.executable, "-m", "kerasseg.train", *map(str, args)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": ROOT, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _check_consistent(run):
    """What a user may rely on at any instant: history rows 0..k exactly once, a loadable best model."""
    epochs = _epochs(run)
    assert epochs == list(range(len(epochs))), epochs
    if epochs:
        import keras

        import kerasseg  # noqa: F401 (its layers and losses)

        keras.saving.load_model(run / "model.keras")


def test_resume_after_sigkill_continues_from_the_backed_up_epoch(tmp_path):
    run = tmp_path / "run"
    process = _start([*TRAIN, "--epochs", "6", "--train-samples", "256", "--output", run])
    try:
        deadline = time.time() + 300
        while time.time() < deadline and len(_epochs(run)) < 2 and process.poll() is None:
            time.sleep(0.2)
        time.sleep(0.5)  # into the next epoch
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    done = _epochs(run)
    assert 2 <= len(done) < 6, done
    first_losses = [row["loss"] for row in _history(run)]
    result = run_cli("kerasseg.train", "--output", run, "--resume")
    assert result.returncode == 0, result.stderr
    assert _epochs(run) == list(range(6))
    # the second process ran only the remaining epochs ...
    ran = [int(n) for n in re.findall(r"^Epoch (\d+)/6", result.stdout, re.M)]
    completed = len(_epochs(run)) - len(ran)
    assert ran == list(range(completed + 1, 7)) and completed >= len(done)
    # ... from the backed-up weights and optimizer state: its first epoch's loss continues the descent (a model
    # from scratch starts near the first epoch's loss), and the optimizer counted every step of all six epochs
    resumed_loss = _history(run)[completed]["loss"]
    assert resumed_loss < 0.8 * first_losses[0], (first_losses, resumed_loss)
    report = json.loads((run / "metrics.json").read_text())
    assert report["epochs"] == 6 and report["epochs_run"] == 6
    assert report["optimizer_steps"] == 6 * 32
    assert f"resuming {run}" in result.stdout


def test_kill_at_every_epoch_end_write_and_at_random_instants_then_resume(tmp_path):
    """The torture: one 7-epoch run killed by SIGKILL at each step of the epoch-end writes (deterministically,
    through kerasseg.rundir's crash points) and at seeded random instants, resumed after every kill."""
    from kerasseg import rundir

    run = tmp_path / "run"
    epochs = 7
    args = [*TRAIN, "--epochs", str(epochs), "--train-samples", "32", "--output", run]
    kills = 0
    for epoch, point in enumerate(rundir.CRASH_POINTS):
        process = _start(args if epoch == 0 else ["--output", run, "--resume"],
                         {"KERASSEG_CRASH_AT": f"{point}:{epoch}"})
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == -signal.SIGKILL, stderr[-3000:]
        kills += 1
        _check_consistent(run)
    rng = random.Random(0)
    for _ in range(2):  # kills from outside, wherever they land (start-up, a step, validation, the writes)
        process = _start(["--output", run, "--resume"])
        time.sleep(rng.uniform(3.0, 10.0))
        process.send_signal(signal.SIGKILL)
        process.communicate()
        kills += 1
        _check_consistent(run)
    assert kills >= len(rundir.CRASH_POINTS) + 1
    result = run_cli("kerasseg.train", "--output", run, "--resume")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert _epochs(run) == list(range(epochs))
    _check_consistent(run)
    report = json.loads((run / "metrics.json").read_text())
    assert report["epochs_run"] == epochs and report["optimizer_steps"] == epochs * 4
    assert not [p for p in (run / "backup").iterdir() if p.name.startswith(".tmp-")]


def test_a_new_run_refuses_an_output_that_holds_another_and_resume_refuses_other_settings(tmp_path):
    from kerasseg import cli, train

    run = tmp_path / "run"
    first = [*TRAIN, "--epochs", "1", "--train-samples", "16", "--output", run]
    assert run_cli("kerasseg.train", *first).returncode == 0
    with pytest.raises(cli.UsageError, match="holds another run") as refused:  # before any data is read
        train.train(train.parse_args(list(map(str, first))))
    assert "--resume" in str(refused.value) and "--overwrite" in str(refused.value)
    assert _epochs(run) == [0]

    for flags, message in ((["--model", "unet_edge"], "--model unet_edge contradicts"),
                           (["--image-size", "48"], "--image-size 48x48 contradicts"),
                           (["--dataset", "voc:elsewhere"], "--dataset voc:elsewhere contradicts"),
                           (["--overwrite"], "choose one")):
        with pytest.raises(cli.UsageError, match=re.escape(message)):
            train.parse_args(["--output", str(run), "--resume", *flags])
    assert train.parse_args(["--output", str(run), "--resume", "--model", "unet_tiny"]).model == "unet_tiny"

    # --epochs may grow: the run continues to the new count
    result = run_cli("kerasseg.train", "--output", run, "--resume", "--epochs", "3")
    assert result.returncode == 0, result.stderr
    assert _epochs(run) == [0, 1, 2]
    assert json.loads((run / "run.json").read_text())["arguments"]["epochs"] == 3
    with pytest.raises(cli.UsageError, match="may only grow"):
        train.parse_args(["--output", str(run), "--resume", "--epochs", "2"])

    result = run_cli("kerasseg.train", *first, "--overwrite")
    assert result.returncode == 0, result.stderr
    assert _epochs(run) == [0] and json.loads((run / "metrics.json").read_text())["epochs_run"] == 1
