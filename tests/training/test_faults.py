"""Faults: a real `folio lm train` killed with SIGKILL (no chance to save, unlike Ctrl-C) at a random step
and then `--resume`d ends with the weights of an uninterrupted run, bit for bit, for the GRU and the GPT;
a kill at any moment, in the middle of a checkpoint write included, leaves complete checkpoints only, and
what a killed write left behind is cleared by the next one.

The kill moments are events (the progress line of a step drawn from a seeded RNG, a checkpoint write
in progress, the n-th file operation of a save), never sleeps."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from folio.models.registry import load_checkpoint
from folio.training.checkpoint import load_trainer_state, resume_directory
from tests.helpers import PATTERN, folio_command

pytestmark = pytest.mark.slow  # about a dozen training processes, 3 s each for the import of torch

MAX_STEPS = 40
COMMON = [
    "--seq-len", "16", "--batch-size", "4", "--max-steps", str(MAX_STEPS), "--warmup-steps", "5", "--lr", "1e-2",
    "--seed", "3", "--eval-every", "10", "--log-every", "1", "--device", "cpu", "--sample-temperatures",
    # --max-time defaults to 180 s and the cosine schedule follows whichever limit is nearer: keep the
    # schedule a function of the step alone, however slow the machine
    "--max-time", "1e9",
]
# dropout on, so a resume that lost the RNG states would not reproduce the run
MODELS = {
    "gru": ["--arch", "gru", "--layers", "1", "--hidden", "16", "--dropout", "0.1"],
    "gpt": ["--arch", "gpt", "--layers", "1", "--hidden", "16", "--heads", "2", "--dropout", "0.1"],
    "bilm": ["--arch", "bilm", "--layers", "1", "--hidden", "16", "--dropout", "0.1"],
}
PROGRESS = re.compile(r"step (\d+)/")
RESUMING = re.compile(r"resuming at step (\d+)")
TIMEOUT = 120  # seconds for one training process, on a loaded machine
# one thread: these models are too small to gain from more, and idle OpenMP threads spin on a busy machine
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "small.txt"
    path.write_text(PATTERN * 200, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory):
    """The output directory of a run of `model` that nothing interrupted (one per model, shared)."""
    runs = {}

    def run(model: str) -> Path:
        if model not in runs:
            out = tmp_path_factory.mktemp("uninterrupted") / model
            run_to_end(train_command(corpus, out, model, save_every=4))
            runs[model] = out
        return runs[model]

    return run


def train_command(corpus: Path, out: Path, model: str, save_every: int, resume: bool = False) -> list[str]:
    return [*folio_command(), "lm", "train", "--corpus", str(corpus), "--out", str(out), *MODELS[model], *COMMON,
            "--save-every", str(save_every), *(["--resume"] if resume else [])]


def run_to_end(command: list[str]) -> str:
    """Run a training to its end; returns its progress output."""
    result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=TIMEOUT,
                            env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def kill_when(command: list[str], step: int, out: Path | None = None) -> None:
    """Start a training and SIGKILL it once its progress line shows `step` or later; with `out`, from then on
    at the first moment a checkpoint write is seen in progress (its temporary directory exists)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    watchdog = threading.Timer(TIMEOUT, process.kill)
    watchdog.start()
    seen = []
    try:
        for line in process.stderr:
            seen.append(line)
            match = PROGRESS.match(line)
            if match and int(match.group(1)) >= step:
                while out is not None and not any(out.glob(".last.tmp-*")) and process.poll() is None:
                    os.sched_yield()  # the training writes `last` every step: this spins for milliseconds
                process.send_signal(signal.SIGKILL)
                break
        process.wait()
    finally:
        watchdog.cancel()
        process.kill()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL, "".join(seen)[-3000:]


def leftovers(out: Path) -> list[str]:
    """Temporary and set-aside directories of checkpoint writes, in OUT and beside it."""
    return sorted(path.name for folder in (out, out.parent) for path in folder.iterdir()
                  if ".tmp-" in path.name or path.name.endswith(".old"))


def assert_complete(out: Path) -> int:
    """OUT holds a complete model and `--resume` finds a complete checkpoint; returns its step."""
    load_checkpoint(out, "lm")  # config.json, model.safetensors, vocab.json (a biLM's too: folio pretrain's)
    directory, _ = resume_directory("", out, "lm")  # what a bare --resume picks
    assert directory == out / "last"
    load_checkpoint(directory, "lm")
    return load_trainer_state(directory)["step"]


def assert_same_weights(a: Path, b: Path) -> None:
    for checkpoint in ("last", "."):  # the final weights, and the best model
        weights_a = load_file(str(a / checkpoint / "model.safetensors"))
        weights_b = load_file(str(b / checkpoint / "model.safetensors"))
        assert weights_a.keys() == weights_b.keys()
        for name in weights_a:
            assert torch.equal(weights_a[name], weights_b[name]), f"{checkpoint}: {name}"


@pytest.mark.parametrize("model", ["gru", "gpt", "bilm"])
def test_a_run_killed_at_a_random_step_resumes_to_the_uninterrupted_weights(model, corpus, uninterrupted, tmp_path):
    save_every = 4
    kill_step = random.Random(f"faults-{model}").randint(2 * save_every, MAX_STEPS - 10)
    out = tmp_path / model
    kill_when(train_command(corpus, out, model, save_every), kill_step)
    saved = assert_complete(out)
    assert kill_step - save_every <= saved < MAX_STEPS

    progress = run_to_end(train_command(corpus, out, model, save_every, resume=True))
    assert [int(step) for step in RESUMING.findall(progress)] == [saved]
    assert load_trainer_state(out / "last")["step"] == MAX_STEPS
    assert_same_weights(uninterrupted(model), out)
    assert leftovers(out) == []


def test_kills_during_checkpoint_writes_leave_complete_checkpoints(corpus, uninterrupted, tmp_path):
    """Saving every step, kill round after round (every other time while a write is seen in progress), check
    what is on disk after each kill, then resume to the end."""
    rng = random.Random("faults-writes")
    out = tmp_path / "gru"
    saved, left = 10, []  # the first kill after the first evaluation, so OUT holds a model
    for round in range(3):
        kill_when(train_command(corpus, out, "gru", save_every=1, resume=round > 0), saved + rng.randint(1, 6),
                  out=out if round % 2 else None)
        step = assert_complete(out)
        assert step >= saved
        saved = step
        left.append(leftovers(out))
        assert len(left[-1]) <= 1, left  # the latest kill's, at most: earlier ones were cleared
    assert saved < MAX_STEPS
    run_to_end(train_command(corpus, out, "gru", save_every=1, resume=True))
    assert load_trainer_state(out / "last")["step"] == MAX_STEPS
    assert_same_weights(uninterrupted("gru"), out)
    assert leftovers(out) == [], left


# For `last` (swapped in whole) and OUT (files renamed one by one, beside metrics.jsonl and last/): saves
# a checkpoint at step 1, then, in a forked child per crash point n, saves step 2 and SIGKILLs itself just
# before the n-th file operation of that save (fsync, rename, removal); records what a reader finds (after
# what --resume does) and what a save at step 3 leaves. One JSON line per crash point.
CRASH_POINTS = r"""
import json, os, shutil, signal, sys
from pathlib import Path
import torch
from folio.models import registry
from folio.training import checkpoint

model = torch.nn.Linear(2, 2)

def save(out, target, step):
    with torch.no_grad():
        model.weight.fill_(step)
    directory = out / "last" if target == "last" else out
    checkpoint.save_checkpoint(directory, model, {"task": "toy", "step": step},
                               lambda d: (d / "vocab.json").write_text(json.dumps(step)),
                               {"step": step} if target == "last" else None)

def step_of(directory, target):
    config = registry.read_config(directory, "toy")
    registry.load_weights(model, directory)
    return {"config": config["step"], "weights": int(model.weight[0, 0]),
            "vocab": json.loads((directory / "vocab.json").read_text()),
            "state": checkpoint.load_trainer_state(directory)["step"] if target == "last" else None}

def leftovers(out):
    return sorted(p.name for folder in (out, out.parent) for p in folder.iterdir()
                  if ".tmp-" in p.name or p.name.endswith(".old"))

def crash(target, n, out):
    out.mkdir(parents=True)
    (out / "metrics.jsonl").write_text("{}\n")  # OUT holds more than a checkpoint
    save(out, target, 1)
    pid = os.fork()
    if pid == 0:
        calls = 0
        def dying(function):
            def call(*args, **kwargs):
                nonlocal calls
                calls += 1
                if calls == n:
                    os.kill(os.getpid(), signal.SIGKILL)
                return function(*args, **kwargs)
            return call
        os.fsync, os.replace, shutil.rmtree = dying(os.fsync), dying(os.replace), dying(shutil.rmtree)
        save(out, target, 2)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if os.WIFEXITED(status):
        return None  # the save has fewer than n operations
    directory = checkpoint.resume_directory("", out, "toy")[0] if target == "last" else out
    record = {"target": target, "n": n, "killed": os.WTERMSIG(status), "left": leftovers(out),
              "found": step_of(directory, target)}
    save(out, target, 3)
    return {**record, "after": step_of(directory, target), "left_after": leftovers(out)}

for target in ("last", "out"):
    for n in range(1, 100):
        record = crash(target, n, Path(sys.argv[1]) / target / str(n) / "out")
        if record is None:
            break
        print(json.dumps(record), flush=True)
"""


def test_a_kill_at_any_point_of_a_save_leaves_a_complete_checkpoint(tmp_path):
    result = subprocess.run([sys.executable, "-c", CRASH_POINTS, str(tmp_path)], capture_output=True, text=True,
                            timeout=TIMEOUT, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in result.stdout.splitlines()]
    for target in ("last", "out"):  # at least the fsyncs, then the renames and removals
        assert len([record for record in records if record["target"] == target]) >= 6, result.stdout
    for record in records:
        assert record["killed"] == signal.SIGKILL
        found = record["found"]
        # the old checkpoint or the new one, whole (config.json, renamed last, says which weights are there)
        assert found["weights"] in (1, 2) and found["vocab"] in (1, 2), record
        assert found["config"] == 1 or found["weights"] == found["vocab"] == 2, record
        if record["target"] == "last":
            assert found["state"] == found["weights"] == found["config"] == found["vocab"], record
        assert len(record["left"]) <= 1, record  # at most the killed save's temporary directory
        after = {"config": 3, "weights": 3, "vocab": 3, "state": 3 if record["target"] == "last" else None}
        assert record["after"] == after, record
        assert record["left_after"] == [], record
    for target in ("last", "out"):  # killed at its very end, a save has put the new checkpoint in place
        assert [record for record in records if record["target"] == target][-1]["found"]["weights"] == 2
