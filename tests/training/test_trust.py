"""Checkpoints that cannot run code, runs that stop when they diverge, saves that fail in one line (issue 23):
the trainer state is read with `weights_only=True`; a non-finite loss ends a run naming the step and the
learning rate; `last/` is written before every best model; a full disk leaves the previous checkpoint whole;
`--out` is checked before any work; `model.safetensors` is checked against the model from its header."""

import errno
import math
import os
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from folio.errors import CheckpointError, DivergedError, OutputError
from folio.models.registry import build_checked, check_weights, load_weights
from folio.training import checkpoint as checkpoint_module
from folio.training.checkpoint import TRAINER_STATE, check_output, load_trainer_state, save_checkpoint
from folio.training.config import TrainConfig
from folio.training.trainer import Trainer
from tests.helpers import ToyBatches, ToyRegressor

pytestmark = pytest.mark.usefixtures("no_curve_picture")


def make_trainer(out, evaluate=None, model=None, **config) -> Trainer:
    batches = ToyBatches()
    settings = dict(lr=0.05, warmup_steps=2, max_steps=20, eval_every=10, save_every=10, log_every=5, seed=0)
    settings.update(config)
    return Trainer(model or ToyRegressor(), batches, TrainConfig(**settings), out, evaluate=evaluate or batches.evaluate,
                   saved_config={"task": "toy"}, progress=False)


# ---- the trainer state runs no code ----------------------------------------------------------------------
class _Exploit:
    """Unpickled, it would write `marker`: what a crafted trainer_state.pt could do on --resume."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def test_a_trainer_state_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    make_trainer(tmp_path / "run", max_steps=10).train()
    last = tmp_path / "run" / "last"
    marker = tmp_path / "marker"
    state = torch.load(last / TRAINER_STATE, weights_only=True)
    torch.save({**state, "step": _Exploit(marker)}, last / TRAINER_STATE)
    with pytest.raises(CheckpointError) as info:
        make_trainer(tmp_path / "run", max_steps=20).resume(last)
    message = str(info.value)
    assert "trainer_state.pt" in message and "read safely" in message and "exec" in message, message
    assert "\n" not in message
    assert not marker.exists()


def test_the_trainer_state_holds_only_tensors_numbers_and_containers(tmp_path):
    make_trainer(tmp_path, max_steps=10).train()
    state = torch.load(tmp_path / "last" / TRAINER_STATE, weights_only=True)  # raises on anything else
    assert state["format"] == 2 and state["step"] == 10 and state["best_step"] == 10


def test_a_format_1_state_with_a_numpy_rng_array_still_resumes(tmp_path):
    make_trainer(tmp_path, max_steps=10).train()
    path = tmp_path / "last" / TRAINER_STATE
    state = torch.load(path, weights_only=True)
    del state["format"]
    for rank in state["ranks"]:  # as Folio wrote it before: NumPy's own state tuple, with its uint32 array
        kind, key, pos, has_gauss, gauss = rank["rng"]["numpy"]
        rank["rng"]["numpy"] = (kind, key.numpy().astype(np.uint32), pos, has_gauss, gauss)
    torch.save(state, path)
    resumed = make_trainer(tmp_path, max_steps=20)
    resumed.resume(tmp_path / "last")
    assert resumed.step == 10 and np.random.get_state()[2] == state["ranks"][0]["rng"]["numpy"][2]


@pytest.mark.parametrize("change, needle", [({"format": 99}, "format 99"), ({"epoch": None}, "no 'epoch'")])
def test_a_state_of_another_format_or_incomplete_is_refused(tmp_path, change, needle):
    make_trainer(tmp_path, max_steps=10).train()
    path = tmp_path / "last" / TRAINER_STATE
    state = {**torch.load(path, weights_only=True), **change}
    torch.save({k: v for k, v in state.items() if v is not None}, path)
    with pytest.raises(CheckpointError, match=needle) as info:
        make_trainer(tmp_path, max_steps=20).resume(tmp_path / "last")
    assert str(path.parent) in str(info.value)


def test_resuming_restores_every_rng_exactly(tmp_path):
    make_trainer(tmp_path, max_steps=10).train()
    # the state was saved after the last step and its evaluation: the generators continue from there
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    make_trainer(tmp_path, max_steps=20).resume(tmp_path / "last")
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


# ---- divergence ---------------------------------------------------------------------------------------------
def test_a_non_finite_training_loss_stops_the_run_naming_the_step_and_the_rate(tmp_path):
    trainer = make_trainer(tmp_path, lr=1e30, warmup_steps=0, min_lr_ratio=1, grad_clip=0)
    with pytest.raises(DivergedError) as info:
        trainer.train()
    message = str(info.value)
    assert f"step {trainer.step}" in message and "learning rate 1e+30" in message and "no model was saved" in message
    assert trainer.step < 20 and not (tmp_path / "model.safetensors").exists()


def test_a_non_finite_validation_loss_stops_the_run_and_keeps_the_last_best(tmp_path):
    losses = iter([0.5, math.nan])
    trainer = make_trainer(tmp_path, evaluate=lambda model: next(losses), max_steps=30)
    with pytest.raises(DivergedError, match=r"step 20: the validation loss is nan .*\(validation loss 0\.5000\)"):
        trainer.train()
    assert trainer.best_valid == 0.5
    assert load_trainer_state(tmp_path / "last")["step"] == 10  # the diverged step was not saved


def test_last_is_written_before_every_best_model(tmp_path, monkeypatch):
    saved = []
    real = checkpoint_module.save_checkpoint

    def record(directory, *args, **kwargs):
        saved.append(directory.name)
        return real(directory, *args, **kwargs)

    monkeypatch.setattr("folio.training.trainer.save_checkpoint", record)
    losses = iter([3.0, 2.0, 2.5])
    make_trainer(tmp_path, evaluate=lambda model: next(losses), max_steps=30, save_every=1000).train()
    out = tmp_path.name
    # two improvements (last, then the best), a third evaluation without one, the final state
    assert saved == ["last", out, "last", out, "last"]


def test_a_kill_between_last_and_the_best_model_is_repaired_on_resume(tmp_path):
    make_trainer(tmp_path, max_steps=10).train()
    best = load_file(str(tmp_path / "model.safetensors"))
    for name in ("model.safetensors", "config.json"):  # killed after last/, before the best model was written
        (tmp_path / name).unlink()
    make_trainer(tmp_path, max_steps=10).resume(tmp_path / "last")
    again = load_file(str(tmp_path / "model.safetensors"))
    assert best.keys() == again.keys() and all(torch.equal(best[k], again[k]) for k in best)


# ---- saving and --out -------------------------------------------------------------------------------------
def test_a_full_disk_at_save_time_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = ToyRegressor()
    save_checkpoint(tmp_path / "ckpt", model, {"task": "toy"})
    before = (tmp_path / "ckpt" / "model.safetensors").read_bytes()

    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint_module.os, "replace", full)
    with torch.no_grad():
        model.linear.weight.add_(1)
    with pytest.raises(OutputError) as info:
        save_checkpoint(tmp_path / "ckpt", model, {"task": "toy"})
    assert str(tmp_path / "ckpt") in str(info.value) and "No space left on device" in str(info.value)
    assert (tmp_path / "ckpt" / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # the temporary directory is gone


def test_a_save_under_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="cannot save the checkpoint .*file/ckpt"):
        save_checkpoint(tmp_path / "file" / "ckpt", ToyRegressor(), {"task": "toy"})


def test_out_is_checked_before_any_work(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    check_output(tmp_path / "new" / "deeper")
    check_output(tmp_path / "dir")
    check_output(tmp_path / "file", directory=False)
    with pytest.raises(OutputError, match="is a file"):
        check_output(tmp_path / "file")
    with pytest.raises(OutputError, match="is a file, so nothing can be written under it"):
        check_output(tmp_path / "file" / "a" / "b")
    with pytest.raises(OutputError, match="is a directory"):
        check_output(tmp_path / "dir", directory=False)


# ---- model.safetensors against the model ----------------------------------------------------------------
@pytest.fixture
def saved(tmp_path):
    save_checkpoint(tmp_path / "m", ToyRegressor(), {"task": "toy"})
    return tmp_path / "m"


def _rewrite(directory, change):
    path = directory / "model.safetensors"
    state = load_file(str(path))
    change(state)
    save_file(state, str(path))


@pytest.mark.parametrize("change, needle", [
    (lambda s: s.update(extra=torch.zeros(2)), "holds tensor 'extra'"),
    (lambda s: s.pop("scale"), "lacks tensor 'scale'"),
    (lambda s: s.update({"linear.weight": torch.zeros(1, 5)}), "'linear.weight' has shape [1, 5]"),
])
def test_weights_that_do_not_fit_the_model_are_refused_by_name(saved, change, needle):
    _rewrite(saved, change)
    with pytest.raises(CheckpointError, match=f"model.safetensors.*{needle}".replace("[", r"\[").replace("]", r"\]")):
        load_weights(ToyRegressor(), saved)


def test_non_finite_weights_are_refused_naming_the_tensor(saved):
    _rewrite(saved, lambda s: s["linear.bias"].fill_(math.inf))
    with pytest.raises(CheckpointError, match="model.safetensors: tensor 'linear.bias' holds NaN or infinite"):
        load_weights(ToyRegressor(), saved)


def test_a_config_larger_than_the_weights_is_refused_before_allocating(saved):
    built = []

    def huge():  # what a config.json asking for 10**12 parameters builds
        model = torch.nn.Linear(10**6, 10**6)
        built.append(model.weight.device.type)
        return model

    with pytest.raises(CheckpointError, match="holds tensor|lacks tensor"):
        build_checked(saved, huge)
    assert built == ["meta"]  # only the skeleton was built
    with torch.device("meta"):
        check_weights(ToyRegressor(), saved)  # the real model passes

