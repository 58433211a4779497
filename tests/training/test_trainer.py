"""The trainer on its own, with a toy model and toy batches (tests/helpers/toy.py) instead of a task:
learning, the learning-rate schedules, the three ways a run stops, exact resume, the weight average,
gradient clipping, the best checkpoint, the metrics log and per-group learning-rate scales.

The language-model task's training (stateful streams, Muon on a GPT, bf16, two processes) is tested in
tests/tasks/test_lm_train.py."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from folio.errors import ConfigError
from folio.training import trainer as trainer_module
from folio.training.batches import Batch, TrainBatches
from folio.training.config import TrainConfig
from folio.training.trainer import Trainer
from tests.helpers import ToyBatches, ToyRecurrent, ToyRegressor

pytestmark = pytest.mark.usefixtures("no_curve_picture")


def make_trainer(out, model=None, batches=None, evaluate=None, on_step=None, param_groups=None, write_extras=None,
                 **config) -> Trainer:
    """A trainer for the toy regression; `config` overrides the TrainConfig fields below."""
    batches = batches or ToyBatches()
    settings = dict(lr=0.05, warmup_steps=5, max_steps=60, eval_every=20, save_every=20, log_every=10, seed=0)
    settings.update(config)
    return Trainer(model or ToyRegressor(), batches, TrainConfig(**settings), out, evaluate=evaluate or batches.evaluate,
                   saved_config={"task": "toy", "model": {"features": 4}}, write_extras=write_extras,
                   progress=False, param_groups=param_groups, on_step=on_step)


def weights(path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def records(out, kind: str) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["kind"] == kind]


def test_the_toy_batches_are_what_the_trainer_reads():
    for batches in (ToyBatches(), ToyBatches(stream=4)):
        assert isinstance(batches, TrainBatches)
        assert isinstance(batches.batch(0, 0), Batch)


@pytest.mark.parametrize("model_class,stream", [(ToyRegressor, 0), (ToyRecurrent, 4)])
def test_a_toy_model_learns(tmp_path, model_class, stream):
    torch.manual_seed(0)
    batches = ToyBatches(stream=stream)
    before = batches.evaluate(model := model_class())
    summary = make_trainer(tmp_path, model, batches, lr=0.1, max_steps=150, eval_every=50).train()
    # y = x·w + b has variance |w|² = 14.25: an untrained model is off by about that much.
    assert before > 5
    assert summary["best_valid"] < 0.1
    assert summary["steps"] == 150 and summary["stop_reason"] == "max_steps"


# ---- learning-rate schedules ------------------------------------------------------------------------
def lr_at(trainer: Trainer, step: int, elapsed: float = 0.0) -> float:
    trainer.step, trainer.elapsed = step, elapsed
    return trainer.lr_at()


def test_linear_warm_up_then_cosine_decay_to_the_floor(tmp_path):
    trainer = make_trainer(tmp_path, lr=1.0, warmup_steps=10, max_steps=100, min_lr_ratio=0.1)
    assert [lr_at(trainer, step) for step in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])  # (step + 1) / warm-up
    assert lr_at(trainer, 10) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.1)))
    assert lr_at(trainer, 50) == pytest.approx(0.55)  # half-way: half-way between the peak and the floor
    assert lr_at(trainer, 100) == pytest.approx(0.1)  # the floor: lr * min_lr_ratio
    decay = [lr_at(trainer, step) for step in range(10, 101)]
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False))


def test_the_cosine_follows_the_time_limit_when_it_comes_first(tmp_path):
    by_time = make_trainer(tmp_path, lr=1.0, warmup_steps=10, max_steps=None, max_time=100.0)
    assert lr_at(by_time, 20, elapsed=50.0) == pytest.approx(0.55)
    both = make_trainer(tmp_path, lr=1.0, warmup_steps=10, max_steps=100, max_time=1000.0)
    # 50 % of the steps but 90 % of the time: the run ends with the time, so the schedule follows it
    assert lr_at(both, 50, elapsed=900.0) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.9)))


def test_inverse_square_root_schedule(tmp_path):
    trainer = make_trainer(tmp_path, lr=1.0, warmup_steps=10, max_steps=1000, schedule="inverse_sqrt")
    assert [lr_at(trainer, step) for step in (0, 9)] == pytest.approx([0.1, 1.0])
    assert lr_at(trainer, 39) == pytest.approx(0.5)  # lr · √(warm-up / step), counting steps from 1
    assert lr_at(trainer, 399) == pytest.approx(math.sqrt(10 / 400))
    assert lr_at(trainer, 999) == pytest.approx(math.sqrt(10 / 1000))  # no floor, and the end of the run is not used


def test_each_parameter_group_gets_the_scheduled_lr_times_its_scale(tmp_path):
    torch.manual_seed(0)
    model = ToyRegressor()
    groups = [{"params": [model.linear.weight]}, {"params": [model.linear.bias], "lr_scale": 0.1}]
    seen = []
    trainer = None

    def on_step(step):
        seen.append([group["lr"] for group in trainer.optimizer.param_groups])

    trainer = make_trainer(tmp_path, model, param_groups=groups, on_step=on_step, lr=0.05, warmup_steps=5, max_steps=12,
                           log_every=1)
    trainer.train()
    logged = [record["lr"] for record in records(tmp_path, "train")]
    assert logged[:5] == pytest.approx([0.01, 0.02, 0.03, 0.04, 0.05])  # the warm-up
    assert [lrs[0] for lrs in seen] == pytest.approx(logged)  # lr_scale 1 by default
    assert [lrs[1] for lrs in seen] == pytest.approx([0.1 * lr for lr in logged])


# ---- how a run stops ----------------------------------------------------------------------------------
def test_a_run_stops_at_max_steps(tmp_path):
    summary = make_trainer(tmp_path, max_steps=7, max_time=3600.0).train()
    assert summary["steps"] == 7 and summary["stop_reason"] == "max_steps"


def test_a_run_stops_at_max_time(tmp_path):
    summary = make_trainer(tmp_path, max_steps=None, max_time=0.3, eval_every=10**6).train()
    assert summary["stop_reason"] == "max_time"
    assert summary["elapsed"] >= 0.3 and summary["steps"] > 0


def test_early_stopping_ends_a_run_that_stops_improving(tmp_path):
    summary = make_trainer(tmp_path, evaluate=lambda model: 1.0, max_steps=1000, eval_every=10, patience=2).train()
    assert summary["stop_reason"] == "early_stopping"
    assert summary["steps"] == 30  # best at step 10, no improvement at 20 and 30


def test_patience_lets_an_improving_run_finish(tmp_path):
    losses = iter([5.0, 4.0, 3.0, 2.0])
    summary = make_trainer(tmp_path, evaluate=lambda model: next(losses), max_steps=40, eval_every=10, patience=1).train()
    assert summary["stop_reason"] == "max_steps" and summary["steps"] == 40 and summary["best_valid"] == 2.0


# ---- checkpoints and resume -----------------------------------------------------------------------------
class Crash(Exception):
    pass


def toy_run(out, stream, ema, stop_at=None, stop_with=None, resume=False) -> dict:
    """Train the toy (with dropout, so the RNG matters) for 60 steps, raising `stop_with` after step `stop_at`;
    or resume from out/last."""
    torch.manual_seed(123 if resume else 0)  # a resumed run takes every weight from the checkpoint
    model = ToyRecurrent(dropout=0.1) if stream else ToyRegressor(dropout=0.1)

    def on_step(step):
        if step == stop_at:
            raise stop_with

    trainer = make_trainer(out, model, ToyBatches(stream=stream), on_step=on_step, ema_decay=ema, max_steps=60,
                           eval_every=20, save_every=20)
    if resume:
        trainer.resume(out / "last")
    return trainer.train()


@pytest.mark.parametrize("stream,ema", [(0, 0.0), (4, 0.0), (0, 0.9), (4, 0.9)])
@pytest.mark.parametrize("stop_with,stop_at", [(KeyboardInterrupt, 25), (Crash, 30)])
def test_an_interrupted_run_resumes_exactly(tmp_path, stream, ema, stop_with, stop_at):
    full = toy_run(tmp_path / "full", stream, ema)
    with pytest.raises(stop_with):
        toy_run(tmp_path / "cut", stream, ema, stop_at=stop_at, stop_with=stop_with)
    saved_at = torch.load(tmp_path / "cut" / "last" / "trainer_state.pt", weights_only=False)["step"]
    # Ctrl-C saves where it stopped; a crash leaves the last periodic checkpoint (save_every 20)
    assert saved_at == (25 if stop_with is KeyboardInterrupt else 20)
    resumed = toy_run(tmp_path / "cut", stream, ema, resume=True)
    assert resumed["steps"] == 60 and resumed["best_valid"] == full["best_valid"]
    for checkpoint in ("last", "."):  # the weights, and the best model (the averaged weights with EMA)
        a, b = weights(tmp_path / "full" / checkpoint), weights(tmp_path / "cut" / checkpoint)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_resuming_refuses_a_different_run(tmp_path):
    make_trainer(tmp_path, max_steps=20).train()
    with pytest.raises(ConfigError, match="--ema-decay was not used"):
        make_trainer(tmp_path, ema_decay=0.9).resume(tmp_path / "last")
    state = make_trainer(tmp_path).state_dict()
    state["world_size"] = 2
    with pytest.raises(ConfigError, match="trained with 2 processes"):
        make_trainer(tmp_path).load_state_dict(state)


def test_the_best_checkpoint_is_the_lowest_validation_loss(tmp_path):
    torch.manual_seed(0)
    scripted = iter([3.0, 1.0, 2.0, 1.5])
    at_eval = []

    def evaluate(model):
        at_eval.append({name: tensor.clone() for name, tensor in model.state_dict().items()})
        return next(scripted)

    def write_extras(directory):
        (directory / "vocab.txt").write_text("toy\n")

    summary = make_trainer(tmp_path, evaluate=evaluate, write_extras=write_extras, max_steps=40, eval_every=10).train()
    assert summary["best_valid"] == 1.0
    assert [record["valid_loss"] for record in records(tmp_path, "eval")] == [3.0, 1.0, 2.0, 1.5]
    best, last = weights(tmp_path), weights(tmp_path / "last")
    for name, tensor in at_eval[1].items():  # the weights of step 20, the best
        assert torch.equal(best[name], tensor), name
    assert any(not torch.equal(last[name], best[name]) for name in best)
    for directory in (tmp_path, tmp_path / "last"):
        config = json.loads((directory / "config.json").read_text())
        assert config["task"] == "toy" and config["model"] == {"features": 4}
        assert (directory / "vocab.txt").read_text() == "toy\n"
    assert (tmp_path / "last" / "trainer_state.pt").exists() and not (tmp_path / "trainer_state.pt").exists()


def test_metrics_jsonl_logs_training_and_validation(tmp_path, monkeypatch, no_curve_picture):
    monkeypatch.setattr(trainer_module, "plot_curves", no_curve_picture)  # this test looks at the picture
    # 8 batches an epoch; the last step (22) is logged and validated although neither interval falls on it
    make_trainer(tmp_path, max_steps=22, log_every=5, eval_every=10).train()
    train, evals = records(tmp_path, "train"), records(tmp_path, "eval")
    assert [r["step"] for r in train] == [5, 10, 15, 20, 22]
    assert [r["epoch"] for r in train] == [0, 1, 1, 2, 2]
    assert set(train[0]) == {"kind", "step", "epoch", "elapsed", "loss", "lr", "tokens_per_s"}
    assert all(r["loss"] > 0 and r["tokens_per_s"] > 0 for r in train)
    assert [r["step"] for r in evals] == [10, 20, 22]
    assert set(evals[0]) == {"kind", "step", "epoch", "elapsed", "valid_loss"}
    assert (tmp_path / "training_curve.png").stat().st_size > 1000


def test_a_stateful_model_carries_its_state_until_a_stream_or_an_epoch_starts(tmp_path):
    model = ToyRecurrent()
    make_trainer(tmp_path, model, ToyBatches(batches=8, stream=3), max_steps=20).train()
    # index within the epoch: 0..7, 0..7, 0..3; a new stream at indices 0, 3 and 6
    assert model.fresh == [step % 8 % 3 == 0 for step in range(20)]


# ---- weight averaging and clipping ----------------------------------------------------------------------
def test_ema_is_the_ramped_average_and_is_validated_and_saved(tmp_path):
    torch.manual_seed(0)
    model = ToyRegressor()
    trained = [p for p in model.parameters() if p.requires_grad]
    expected = [p.detach().clone() for p in trained]  # the average starts at the initial weights
    seen_by_evaluate = []
    trainer = None

    def on_step(step):
        # decay ramps as (1 + n) / (10 + n) over the n updates before this one, up to ema_decay
        decay = min(0.9, step / (9 + step))
        for average, p in zip(expected, trained, strict=True):
            average.lerp_(p.detach(), 1 - decay)
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(trainer.ema, expected, strict=True)), step

    def evaluate(model):
        seen_by_evaluate.append([p.detach().clone() for p in model.parameters() if p.requires_grad])
        return ToyBatches().evaluate(model)

    before = ToyBatches().evaluate(model)
    trainer = make_trainer(tmp_path, model, on_step=on_step, evaluate=evaluate, ema_decay=0.9, max_steps=60,
                           eval_every=60)
    summary = trainer.train()
    state = torch.load(tmp_path / "last" / "trainer_state.pt", weights_only=False)
    best, raw = weights(tmp_path), weights(tmp_path / "last")
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert len(state["ema"]) == len(names) == 2  # the frozen `scale` is not averaged
    for name, averaged, validated in zip(names, state["ema"], seen_by_evaluate[0], strict=True):
        assert torch.equal(best[name], averaged), name  # the saved best model is the average
        assert torch.equal(validated, averaged), name  # ... and it is what validation saw
        assert torch.equal(raw[name], dict(model.named_parameters())[name].detach()), name  # the raw weights are back
    assert any(not torch.equal(best[n], raw[n]) for n in names)  # ... which is not the last weights
    assert summary["best_valid"] < before / 2  # the average learned too


class Steep(ToyRegressor):
    """The toy regression with its loss scaled up, so that its gradients are far longer than any clip."""

    def loss(self, batch):
        return 1e4 * super().loss(batch)


@pytest.mark.parametrize("clip", [0.5, 0.0])
def test_gradients_are_clipped_to_grad_clip(tmp_path, clip):
    norms = []
    trainer = make_trainer(tmp_path, Steep(), grad_clip=clip, max_steps=10)
    step = trainer.optimizer.step

    def step_and_measure(*args, **kwargs):
        grads = [p.grad for p in trainer.trained if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        return step(*args, **kwargs)

    trainer.optimizer.step = step_and_measure
    trainer.train()
    assert len(norms) == 10
    if clip:
        assert max(norms) <= clip * (1 + 1e-5)
    else:  # 0 disables clipping
        assert min(norms) > 100
