"""`run_training(recipe, options)` with a toy recipe: the saved config's sections, the banner, the hooks a
recipe gives, and resuming (exactly, and only a checkpoint of the same task)."""

import json
from dataclasses import dataclass

import pytest
import torch
from safetensors.torch import load_file

from folio.errors import CheckpointError
from folio.training.config import TrainConfig
from folio.training.run import Prepared, RunContext, RunOptions, run_training, trained_parameters
from tests.helpers import ToyBatches, ToyRecurrent, ToyRegressor

pytestmark = pytest.mark.usefixtures("no_curve_picture")


@dataclass
class ToyOptions(RunOptions):
    stream: int = 0  # > 0: the stateful toy, a new stream every `stream` batches
    stop_at: int | None = None  # raise KeyboardInterrupt (Ctrl-C) after this step


class ToyRecipe:
    """Prepares the toy regression (or its stateful variant) as a task's recipe prepares its model and data."""

    task = "toy"

    def __init__(self):
        self.contexts: list[RunContext] = []
        self.steps: list[int] = []

    def prepare(self, options: ToyOptions, context: RunContext) -> Prepared:
        self.contexts.append(context)
        model = ToyRecurrent(dropout=0.1) if options.stream else ToyRegressor(dropout=0.1)
        batches = ToyBatches(stream=options.stream)

        def on_step(trainer):
            self.steps.append(trainer.step)
            if trainer.step == options.stop_at:
                raise KeyboardInterrupt

        return Prepared(
            model=model, batches=batches, evaluate=batches.evaluate,
            saved_config={"model": {"stream": options.stream}},
            describe=f"toy model, {trained_parameters(model)} parameters",
            write_extras=lambda directory: (directory / "vocab.txt").write_text("toy\n"),
            on_step=on_step,
            finish=lambda summary, trainer: {**summary, "finished_at": trainer.step},
        )


def toy_options(out, **fields) -> ToyOptions:
    train = TrainConfig(lr=0.05, warmup_steps=5, max_steps=60, eval_every=20, save_every=20, log_every=10, seed=3)
    return ToyOptions(**{"out": str(out), "train": train, "device": "cpu", "progress": False, **fields})


def test_the_saved_config_the_banner_and_the_hooks(tmp_path, capsys):
    recipe = ToyRecipe()
    options = toy_options(tmp_path, progress=True)
    summary = run_training(recipe, options)
    assert summary["steps"] == 60 and summary["finished_at"] == 60  # `finish` had the last word
    assert recipe.steps == list(range(1, 61))  # `on_step` after every step
    context = recipe.contexts[0]
    assert context.device == torch.device("cpu") and context.dist.world_size == 1 and context.out == tmp_path
    assert not context.resuming and not context.saved
    for directory in (tmp_path, tmp_path / "last"):
        config = json.loads((directory / "config.json").read_text())
        assert config["task"] == "toy" and config["model"] == {"stream": 0}
        assert config["train"] == json.loads(json.dumps(options.train.to_dict()))
        assert (directory / "vocab.txt").read_text() == "toy\n"
    # the recipe's describe, then the device (no process count on one process, no resume step on a new run)
    assert capsys.readouterr().err.splitlines()[0] == "toy model, 5 parameters, device cpu"


@pytest.mark.parametrize("stream", [0, 4])
def test_a_run_interrupted_with_ctrl_c_resumes_exactly(tmp_path, capsys, stream):
    run_training(ToyRecipe(), toy_options(tmp_path / "full", stream=stream))
    with pytest.raises(KeyboardInterrupt):
        run_training(ToyRecipe(), toy_options(tmp_path / "cut", stream=stream, stop_at=25))
    recipe = ToyRecipe()
    summary = run_training(recipe, toy_options(tmp_path / "cut", stream=stream, resume="", progress=True))
    assert summary["steps"] == 60 and recipe.steps == list(range(26, 61))
    context = recipe.contexts[0]
    assert context.resuming and context.resume_dir == tmp_path / "cut" / "last"
    assert context.saved["task"] == "toy" and context.saved["model"] == {"stream": stream}
    assert capsys.readouterr().err.splitlines()[0].endswith("device cpu, resuming at step 25")
    for checkpoint in ("last", "."):
        a = load_file(str(tmp_path / "full" / checkpoint / "model.safetensors"))
        b = load_file(str(tmp_path / "cut" / checkpoint / "model.safetensors"))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_resuming_needs_a_checkpoint_of_the_same_task(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint to resume"):
        run_training(ToyRecipe(), toy_options(tmp_path, resume=""))
    run_training(ToyRecipe(), toy_options(tmp_path, train=TrainConfig(max_steps=5)))

    class Other(ToyRecipe):
        task = "other"

    with pytest.raises(CheckpointError, match="holds a 'toy' model, not a 'other' model"):
        run_training(Other(), toy_options(tmp_path, resume=""))
