"""A training run killed at any instant (SIGKILL included) continues with --resume from its last complete
epoch: no traceback, no missing or duplicated history row, the best model.keras never lost."""

import csv
import json
import os
import random
import re
import shutil
import shlex
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run_cli, run_main

TRAIN = ["--model", "unet_tiny", "--image-size", "32", "--batch-size", "8", "--augment", "flip"]  # (one scale: fast)


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


def _wait_for_epochs(run, process, count, seconds=300):
    """Until `count` epochs of `run` are complete (or the process ended, or `seconds` passed)."""
    deadline = time.time() + seconds
    while time.time() < deadline and len(_epochs(run)) < count and process.poll() is None:
        time.sleep(0.2)


def test_ctrl_c_says_in_one_line_what_is_kept_and_the_command_that_continues(tmp_path):
    """Ctrl-C (SIGINT) during training: no traceback through TensorFlow, one line naming the last complete
    epoch and the --resume command, exit status 130; that command, run as printed, continues the run."""
    from conftest import program_lines

    run = tmp_path / "my run"
    process = _start([*TRAIN, "--epochs", "4", "--train-samples", "64", "--output", run])
    try:
        _wait_for_epochs(run, process, 1)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    lines = program_lines(stderr)
    assert process.returncode == 130 and len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    done = len(_epochs(run))
    assert f"interrupted (Ctrl-C); training stopped, nothing was lost: epoch {done} of 4 is complete" in lines[0]
    command = shlex.split(lines[0].split("continue it with ", 1)[1])
    assert command[:3] == ["python", "-m", "kerasseg.train"]
    result = run_cli(*command[2:])
    assert result.returncode == 0 and _epochs(run) == [0, 1, 2, 3], result.stderr[-2000:]


@pytest.mark.large  # (make test resumes after Ctrl-C, above)
def test_resume_after_sigkill_continues_from_the_backed_up_epoch(tmp_path):
    run = tmp_path / "run"
    process = _start([*TRAIN, "--epochs", "6", "--train-samples", "256", "--output", run])
    try:
        _wait_for_epochs(run, process, 2)
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


@pytest.mark.large
def test_kill_at_every_epoch_end_write_and_at_random_instants_then_resume(tmp_path):
    """The torture: one 7-epoch run killed by SIGKILL at each step of the epoch-end writes (deterministically,
    through kerasseg.training.rundir's crash points) and at seeded random instants, resumed after every kill."""
    from kerasseg.training import rundir

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
    epochs = 14  # more to go than a random kill can outlast: it lands while the run is alive
    for _ in range(1):  # a kill from outside, wherever it lands (start-up, a step, validation, the writes)
        process = _start(["--output", run, "--resume", "--epochs", str(epochs)])
        time.sleep(rng.uniform(3.0, 10.0))
        assert process.poll() is None, "the run ended before the kill: the kill would test nothing"
        process.send_signal(signal.SIGKILL)
        process.communicate()
        assert process.returncode == -signal.SIGKILL
        kills += 1
        _check_consistent(run)
    assert kills == len(rundir.CRASH_POINTS) + 1
    # (--epochs again: a kill that lands in start-up, before the resumed run recorded its new count, leaves the
    # record at 7, and a resume without it would rightly stop there)
    result = run_cli("kerasseg.train", "--output", run, "--resume", "--epochs", str(epochs))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert _epochs(run) == list(range(epochs))
    _check_consistent(run)
    report = json.loads((run / "metrics.json").read_text())
    assert report["epochs_run"] == epochs and report["optimizer_steps"] == epochs * 4
    assert not [p for p in (run / "backup").iterdir() if p.name.startswith(".tmp-")]


def test_a_new_run_refuses_an_output_that_holds_another_and_resume_refuses_other_settings(tmp_path, capsys):
    from kerasseg import cli, train

    run = tmp_path / "run"
    first = [*TRAIN, "--epochs", "1", "--train-samples", "16", "--output", run]
    assert run_main(train.main, *first) == 0  # (in this process: the commands' own runs are tested above)
    with pytest.raises(train.ConfigError, match="holds another run") as refused:  # before any data is read
        train.train(train.parse_args(list(map(str, first))))
    assert "resume=True" in str(refused.value) and "overwrite=True" in str(refused.value)  # (in values)
    assert _epochs(run) == [0]

    for flags, message in ((["--model", "unet_edge"], "--model unet_edge contradicts"),
                           (["--image-size", "48"], "--image-size 48x48 contradicts"),
                           (["--dataset", "voc:elsewhere"], "--dataset voc:elsewhere contradicts"),
                           (["--overwrite"], "choose one")):
        with pytest.raises(cli.UsageError, match=re.escape(message)):
            train.parse_args(["--output", str(run), "--resume", *flags])
    assert train.parse_args(["--output", str(run), "--resume", "--model", "unet_tiny"]).model == "unet_tiny"

    # --epochs may grow: the run continues to the new count
    assert run_main(train.main, "--output", run, "--resume", "--epochs", "3") == 0, capsys.readouterr().err
    assert _epochs(run) == [0, 1, 2]
    assert json.loads((run / "run.json").read_text())["arguments"]["epochs"] == 3
    with pytest.raises(cli.UsageError, match="may only grow"):
        train.parse_args(["--output", str(run), "--resume", "--epochs", "2"])

    assert run_main(train.main, *first, "--overwrite") == 0, capsys.readouterr().err
    assert _epochs(run) == [0] and json.loads((run / "metrics.json").read_text())["epochs_run"] == 1


def _wait_for(condition, process, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None and not condition():
        time.sleep(0.1)
    assert condition(), "the training ended or stalled before it got there"


@pytest.mark.large
def test_one_training_at_a_time_holds_the_run_directory(tmp_path, capsys):
    """Two trainings started at once into one directory: one exits 2 naming the other's process, which trains
    on; a --resume and an --overwrite while it trains are refused likewise. The old code let both write: run.json
    of one, model and history of the other, and a --resume that crashed."""
    from kerasseg import cli, train

    run = tmp_path / "run"
    # (long enough for the refusals below to find the winner still training: they are not skipped)
    processes = [_start([*TRAIN, "--epochs", "12", "--train-samples", "64", "--seed", str(seed), "--output", run])
                 for seed in (1, 2)]
    try:
        deadline = time.time() + 300  # until one has been refused (the other has taken the directory by then)
        while time.time() < deadline and all(p.poll() is None for p in processes):
            time.sleep(0.1)
        loser = next(p for p in processes if p.poll() is not None)
        winner = processes[1 - processes.index(loser)]
        stderr = loser.stderr.read()
        assert loser.returncode == 2 and "Traceback" not in stderr, stderr[-3000:]
        # (or, had the winner finished before the loser got that far: a directory that holds another run)
        assert f"in use by another training (pid {winner.pid} on" in stderr or "holds another run" in stderr
        assert winner.poll() is None, "the winner ended before the refusals could be tried"
        for flags in (["--resume"], [*TRAIN, "--epochs", "1", "--overwrite"]):
            assert cli.run(train.main, ["--output", str(run), *flags]) == 2
            assert f"in use by another training (pid {winner.pid} on" in capsys.readouterr().err
        assert winner.wait(timeout=300) == 0, winner.stderr.read()[-3000:]
    finally:
        for process in processes:
            process.kill()
    seed = json.loads((run / "run.json").read_text())["arguments"]["seed"]
    assert json.loads((run / "metrics.json").read_text())["seed"] == seed  # one run's files, all of them
    assert _epochs(run) == list(range(12))
    assert run_main(train.main, "--output", run, "--resume", "--epochs", "13") == 0, capsys.readouterr().err
    assert _epochs(run) == list(range(13))


def _fill_the_disk_after_the_first_epoch(tmp_path):
    """Runs a training on a 40 MB tmpfs (a user namespace of its own) that a filler file fills once the
    first epoch is complete; then, the filler removed, resumes it. Returns (the first process's exit status and
    stderr, the run directory as it was left, the resume's exit status and stderr), or None where this machine
    cannot make the namespace."""
    tmp_path.mkdir()
    script = tmp_path / "full.sh"
    script.write_text(f"""set -u
disk={tmp_path}/mount
mkdir -p "$disk"
mount -t tmpfs -o size=40m tmpfs "$disk" || exit 77
{sys.executable} -m kerasseg.train {' '.join(TRAIN)} --epochs 3 --train-samples 32 --output "$disk/run" \\
    > {tmp_path}/out.txt 2> {tmp_path}/err.txt &
pid=$!
until [ "$(cat "$disk/run/history.csv" 2>/dev/null | wc -l)" -ge 2 ] || ! kill -0 $pid 2>/dev/null; do sleep 0.1; done
head -c 40m /dev/zero > "$disk/filler" 2>/dev/null
wait $pid; echo $? > {tmp_path}/status.txt
cp -r "$disk/run" {tmp_path}/left
rm "$disk/filler"
{sys.executable} -m kerasseg.train --output "$disk/run" --resume > /dev/null 2> {tmp_path}/resume_err.txt
echo $? > {tmp_path}/resume_status.txt
cp "$disk/run/history.csv" {tmp_path}/resumed_history.csv
""")
    try:
        code = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "bash", str(script)], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": ROOT}, timeout=600).returncode
    except FileNotFoundError:
        return None
    if code == 77 or not (tmp_path / "status.txt").exists():
        return None
    return (int((tmp_path / "status.txt").read_text()), (tmp_path / "err.txt").read_text(), tmp_path / "left",
            int((tmp_path / "resume_status.txt").read_text()), (tmp_path / "resume_err.txt").read_text())


def _limit_file_sizes_after_the_first_epoch(tmp_path):
    """Runs a training whose files may not grow at all once its first epoch is complete (RLIMIT_FSIZE: EFBIG,
    "File too large", on any write), then resumes it without the limit: as _fill_the_disk_after_the_first_epoch
    returns."""
    import resource

    run = tmp_path / "run"
    process = _start([*TRAIN, "--epochs", "3", "--train-samples", "32", "--output", run])
    try:
        _wait_for(lambda: len(_epochs(run)) >= 1, process)
        resource.prlimit(process.pid, resource.RLIMIT_FSIZE, (0, 0))
        _, stderr = process.communicate(timeout=300)
    finally:
        process.kill()
    shutil.copytree(run, tmp_path / "left")
    result = run_cli("kerasseg.train", "--output", run, "--resume")
    shutil.copy(run / "history.csv", tmp_path / "resumed_history.csv")
    return process.returncode, stderr, tmp_path / "left", result.returncode, result.stderr


@pytest.mark.large
def test_a_full_disk_or_another_write_error_stops_with_one_line_and_loses_nothing(tmp_path):
    """The old code ended in an HDF5 OSError traceback (and a segfault); now: one line, exit 1, the last
    complete epoch intact, and --resume continues once there is room. A real full disk (ENOSPC) where a user
    namespace can mount a small tmpfs, else a file size limit (EFBIG)."""
    from conftest import program_lines

    outcome = _fill_the_disk_after_the_first_epoch(tmp_path / "disk") or \
        _limit_file_sizes_after_the_first_epoch(tmp_path / "limit")
    code, stderr, left, resumed, resume_stderr = outcome
    lines = program_lines(stderr)
    assert code == 1 and "Traceback" not in stderr and len(lines) == 1, stderr[-3000:]
    state = json.loads((left / "backup" / "state.json").read_text())
    assert re.search(r"python -m kerasseg.train: error: cannot write .*: (No space left on device|File too large);"
                     rf" training stopped, nothing was lost: epoch {state['epoch'] + 1} of 3 is complete .*--resume",
                     lines[0]), lines[0]
    _check_consistent(left)
    assert _epochs(left) == list(range(state["epoch"] + 1))
    assert resumed == 0, resume_stderr[-3000:]
    assert len((left.parent / "resumed_history.csv").read_text().splitlines()) == 4


@pytest.mark.large
def test_resume_uses_the_saved_model_when_the_code_now_builds_another(tmp_path):
    """A builder's default changed between the kill and --resume (here unet_tiny's base_filters, edited by a
    sitecustomize the resuming process imports): the old code rebuilt the model from the arguments and died in
    a shape-mismatch traceback. The killed process's lock is taken over."""
    run = tmp_path / "run"
    process = _start([*TRAIN, "--epochs", "2", "--train-samples", "16", "--output", run],
                     {"KERASSEG_CRASH_AT": "history:0"})
    assert process.wait(timeout=300) == -signal.SIGKILL
    assert f"pid {process.pid} " in (run / ".lock").read_text()  # the dead holder's
    edited = tmp_path / "edited"
    edited.mkdir()
    (edited / "sitecustomize.py").write_text(
        "from kerasseg.models import registry\n"
        "import kerasseg.models\n"
        "entry = registry._REGISTRY['unet_tiny']\n"
        "builder = entry['fn']\n"
        "entry['fn'] = lambda **kwargs: builder(**{'base_filters': 8, **kwargs})\n")
    result = run_cli("kerasseg.train", "--output", run, "--resume",
                     env={"PYTHONPATH": os.pathsep.join([str(edited), ROOT])})
    assert result.returncode == 0, result.stderr[-3000:]
    assert _epochs(run) == [0, 1]
    import keras

    import kerasseg  # noqa: F401

    assert keras.saving.load_model(run / "model.keras").count_params() == 7724  # base_filters 4, as trained
