"""The one training loop: AdamW (or Muon), warm-up + cosine decay, clipping, evaluation, early stopping,
checkpoints with exact resume, progress, a metrics log, and DistributedDataParallel under torchrun.

A model only has to expose `loss(batch)` (or `loss(batch, state)` returning `(loss, state)` for
stateful training); a task supplies the batches, a validation function and what to save beside the
weights. The settings (`TrainConfig`) and the optimizer they build are in `folio.training.config`.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from folio.errors import CheckpointError, ConfigError, DivergedError
from folio.models.registry import load_weights, unwrap
from folio.runtime import Distributed
from folio.training.batches import TrainBatches
from folio.training.checkpoint import load_trainer_state, save_checkpoint
from folio.training.config import TrainConfig, make_optimizer
from folio.training.progress import MetricsLog, Progress, format_seconds, plot_curves

LAST = "last"  # sub-directory holding the latest full checkpoint (with trainer state)
STATE_KEYS = ("step", "epoch", "index", "elapsed", "best_valid", "bad_evals", "optimizer", "ranks")  # what resume needs


class _LossModule(nn.Module):
    """Routes DDP's forward to `model.loss`, so gradients are synchronised as DDP expects."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch, *state):
        return self.model.loss(batch, *state)


def _rng_state() -> dict:
    """Every generator's state as tensors, numbers and tuples: what `torch.load(weights_only=True)` reads."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (kind, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, gauss),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, key, pos, has_gauss, gauss = state["numpy"]  # key: a tensor, or a NumPy array (format 1)
    np.random.set_state((kind, np.asarray(key).astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _detach(state):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


def _to_device(state, device):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.to(device) for s in state)
    return state.to(device)


class Trainer:
    """Train `model` on `train_data` (`TrainBatches`: `len()`, `batch(epoch, index)` and `stateful`).

    evaluate(model) -> validation loss, or a dict of figures with the loss as "loss" (the others are
    logged beside it as valid_NAME); saved_config: the task's config.json content;
    write_extras(dir): writes vocabulary or tokenizer files beside the weights.
    The best model (by validation loss) is saved to `out_dir`, the latest full checkpoint to
    `out_dir/last`; `resume_from` continues exactly where a `last` checkpoint stopped.
    """

    def __init__(
        self,
        model: nn.Module,
        train_data: TrainBatches,
        config: TrainConfig,
        out_dir: str | Path,
        evaluate: Callable[[nn.Module], float | dict],
        saved_config: dict,
        write_extras: Callable[[Path], None] | None = None,
        device: torch.device | None = None,
        dist_info: Distributed | None = None,
        progress: bool = True,
        param_groups: list[dict] | None = None,
        on_step: Callable[[int], None] | None = None,
    ):
        self.config = config
        self.device = device or torch.device("cpu")
        self.dist = dist_info or Distributed()
        self.model = model.to(self.device)
        self.train_data = train_data
        self.out_dir = Path(out_dir)
        self.evaluate_fn = evaluate
        self.saved_config = saved_config
        self.write_extras = write_extras
        self.on_step = on_step
        self.progress = Progress(enabled=progress and self.dist.is_main)
        self.metrics = MetricsLog(self.out_dir / "metrics.jsonl" if self.dist.is_main else None)
        groups = param_groups or [{"params": [p for p in model.parameters() if p.requires_grad]}]
        for group in groups:
            group.setdefault("lr_scale", 1.0)
        self.optimizer = make_optimizer(groups, model, config)
        loss_module = _LossModule(self.model)
        if self.dist.world_size > 1:
            loss_module = nn.parallel.DistributedDataParallel(
                loss_module, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if config.compile:
            loss_module = torch.compile(loss_module)
        self.loss_module = loss_module
        self.step = 0
        self.epoch = 0
        self.index = 0
        self.elapsed = 0.0
        self.best_valid = math.inf
        self.best_step: int | None = None  # the step whose weights OUT holds
        self.bad_evals = 0
        self.carry = None
        self.lr = 0.0  # the learning rate of the latest step
        self.last_saved: int | None = None  # the step OUT/last holds, while nothing has changed since
        self.trained = [p for p in self.model.parameters() if p.requires_grad]
        self.ema = [p.detach().clone() for p in self.trained] if config.ema_decay > 0 else None

    # ---- schedule ------------------------------------------------------------------------------
    def progress_fraction(self) -> float:
        fractions = []
        if self.config.max_steps:
            fractions.append(self.step / self.config.max_steps)
        if self.config.max_time:
            fractions.append(self.elapsed / self.config.max_time)
        return min(1.0, max(fractions))

    def lr_at(self) -> float:
        """Linear warm-up, then cosine decay from lr to lr * min_lr_ratio over the run, or the inverse
        square root of the step (the peak `lr` is reached at the end of the warm-up either way)."""
        cfg = self.config
        if self.step < cfg.warmup_steps:
            return cfg.lr * (self.step + 1) / cfg.warmup_steps
        if cfg.schedule == "inverse_sqrt":
            return cfg.lr * math.sqrt(max(cfg.warmup_steps, 1) / (self.step + 1))
        cosine = 0.5 * (1 + math.cos(math.pi * self.progress_fraction()))
        return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)

    def finished(self) -> bool:
        cfg = self.config
        return bool(
            (cfg.max_steps is not None and self.step >= cfg.max_steps)
            or (cfg.max_time is not None and self.elapsed >= cfg.max_time)
        )

    # ---- checkpoints ---------------------------------------------------------------------------
    def _gather(self, obj):
        if self.dist.world_size == 1:
            return [obj]
        gathered = [None] * self.dist.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def state_dict(self) -> dict:
        per_rank = self._gather({"rng": _rng_state(), "carry": _to_device(self.carry, "cpu")})
        return {
            "step": self.step,
            "epoch": self.epoch,
            "index": self.index,
            "elapsed": self.elapsed,
            "best_valid": self.best_valid,
            "best_step": self.best_step,
            "bad_evals": self.bad_evals,
            "optimizer": self.optimizer.state_dict(),
            "world_size": self.dist.world_size,
            "ranks": per_rank,
            "train_config": self.config.to_dict(),
            "ema": None if self.ema is None else [t.cpu() for t in self.ema],
        }

    # ---- weight averaging ----------------------------------------------------------------------
    def _update_ema(self) -> None:
        # The decay ramps up over the first steps (as TensorFlow's ExponentialMovingAverage with
        # num_updates) so the average does not hold on to the random initialisation.
        decay = min(self.config.ema_decay, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            torch._foreach_lerp_(self.ema, [p.detach() for p in self.trained], 1 - decay)

    @contextlib.contextmanager
    def _averaged_weights(self):
        """The model holds the averaged weights inside the block (evaluation, the best checkpoint)."""
        if self.ema is None:
            yield
            return
        current = [p.detach().clone() for p in self.trained]
        with torch.no_grad():
            torch._foreach_copy_([p.data for p in self.trained], self.ema)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in self.trained], current)

    def load_state_dict(self, state: dict) -> None:
        if state.get("world_size", 1) != self.dist.world_size:
            raise ConfigError(
                f"the checkpoint was trained with {state.get('world_size')} processes; resume with the same number"
            )
        for name in ("step", "epoch", "index", "elapsed", "best_valid", "bad_evals"):
            setattr(self, name, state[name])
        self.best_step = state.get("best_step")
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            if state.get("ema") is None:
                raise ConfigError("--ema-decay was not used by the run being resumed; resume without it")
            self.ema = [t.to(self.device) for t in state["ema"]]
        mine = state["ranks"][self.dist.rank]
        _set_rng_state(mine["rng"])
        self.carry = _to_device(mine["carry"], self.device)

    def save_last(self) -> None:
        if self.last_saved == self.step:
            return
        state = self.state_dict()  # every rank takes part in the gather
        if self.dist.is_main:
            save_checkpoint(self.out_dir / LAST, self.model, self.saved_config, self.write_extras, state)
        self.last_saved = self.step

    def save_best(self) -> None:
        if self.dist.is_main:
            save_checkpoint(self.out_dir, self.model, self.saved_config, self.write_extras)

    def resume(self, directory: str | Path) -> None:
        load_weights(self.model, directory)
        state = load_trainer_state(directory)
        missing = [key for key in STATE_KEYS if key not in state]
        if missing:
            raise CheckpointError(f"cannot resume: {directory}/trainer_state.pt is incomplete (no {missing[0]!r})")
        try:
            self.load_state_dict(state)
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as err:
            first = (str(err).strip().splitlines() or [""])[0]
            raise CheckpointError(f"cannot resume: {directory}/trainer_state.pt does not fit this run "
                                  f"({type(err).__name__}: {first})") from err
        self.last_saved = self.step
        if self.best_step == self.step:
            # OUT/last is written just before each best model (see run_evaluation): a run killed between
            # the two has its best model in these weights, so write it (again) to OUT.
            with self._averaged_weights():
                self.save_best()

    # ---- the loop ------------------------------------------------------------------------------
    def _autocast(self):
        precision = self.config.precision
        if precision == "bf16" or (precision == "auto" and self.device.type == "cuda"):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def run_evaluation(self) -> float:
        was_training = self.model.training
        self.model.eval()
        with self._averaged_weights():
            with torch.no_grad(), self._autocast():
                result = self.evaluate_fn(unwrap(self.model))
            extras = dict(result) if isinstance(result, dict) else {"loss": result}
            valid = float(extras.pop("loss"))
            if not math.isfinite(valid):
                raise self._diverged("validation loss", valid)
            improved = valid < self.best_valid
            self.last_saved = None
            if improved:
                self.best_valid, self.best_step, self.bad_evals = valid, self.step, 0
            else:
                self.bad_evals += 1
        if improved:
            # last/ first, then the best model: whenever OUT holds a best model, a resumable state exists
            # (resume() rewrites the best model a kill between the two left out).
            self.save_last()
            with self._averaged_weights():
                self.save_best()
        self.model.train(was_training)
        self.metrics.write(kind="eval", step=self.step, epoch=self.epoch, elapsed=round(self.elapsed, 3), valid_loss=valid,
                           **{f"valid_{name}": float(value) for name, value in extras.items()})
        self.progress.message(
            f"step {self.step}: validation loss {valid:.4f}" + (" (best, saved)" if improved else f" (best {self.best_valid:.4f})")
            + "".join(f", {name.replace('_', ' ')} {float(value):.4f}" for name, value in extras.items())
        )
        return valid

    def train(self) -> dict:
        """Run until max_steps / max_time / early stopping; returns a summary."""
        cfg = self.config
        self.model.train()
        stateful = self.train_data.stateful
        batches_per_epoch = len(self.train_data)
        window_loss, window_tokens, window_steps, window_start = 0.0, 0, 0, time.perf_counter()
        start = time.perf_counter() - self.elapsed
        stop_reason = None
        try:
            while not self.finished():
                if self.index >= batches_per_epoch:
                    self.epoch, self.index, self.carry = self.epoch + 1, 0, None
                batch = self.train_data.batch(self.epoch, self.index).to(self.device)
                if batch.reset_state:
                    self.carry = None
                lr = self.lr_at()
                for group in self.optimizer.param_groups:
                    group["lr"] = lr * group["lr_scale"]
                with self._autocast():
                    out = self.loss_module(batch, self.carry) if stateful else self.loss_module(batch)
                loss, self.carry = (out[0], _detach(out[1])) if isinstance(out, tuple) else (out, None)
                loss.backward()
                if cfg.grad_clip > 0:
                    nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                if self.ema is not None:
                    self._update_ema()
                self.step += 1
                self.index += 1
                self.elapsed = time.perf_counter() - start
                self.lr = lr
                value = loss.item()
                if not math.isfinite(value):
                    raise self._diverged("training loss", value)
                window_loss += value
                window_tokens += batch.num_tokens * self.dist.world_size
                window_steps += 1
                if self.on_step is not None:
                    self.on_step(self.step)
                if self.step % cfg.log_every == 0 or self.finished():
                    now = time.perf_counter()
                    rate = window_tokens / max(now - window_start, 1e-9)
                    mean_loss = window_loss / window_steps
                    self.metrics.write(
                        kind="train", step=self.step, epoch=self.epoch, elapsed=round(self.elapsed, 3),
                        loss=mean_loss, lr=lr, tokens_per_s=round(rate, 1),
                    )
                    window_loss, window_tokens, window_steps, window_start = 0.0, 0, 0, now
                    self._show(mean_loss, rate, lr)
                if self.step % cfg.eval_every == 0:
                    self.run_evaluation()
                    if cfg.patience and self.bad_evals >= cfg.patience:
                        stop_reason = "early_stopping"
                        break
                if self.step % cfg.save_every == 0:
                    self.save_last()
        except KeyboardInterrupt:
            self.save_last()
            self.progress.message(f"interrupted at step {self.step}; checkpoint saved to {self.out_dir / LAST}")
            raise
        if stop_reason is None:  # whichever limit was reached
            stop_reason = "max_steps" if cfg.max_steps is not None and self.step >= cfg.max_steps else "max_time"
        if self.step % cfg.eval_every != 0 or self.best_valid == math.inf:
            self.run_evaluation()
        self.save_last()
        if self.dist.is_main:
            plot_curves(self.out_dir / "metrics.jsonl", self.out_dir / "training_curve.png", title=str(self.out_dir.name))
        self.progress.message(
            f"done: {self.step} steps in {format_seconds(self.elapsed)} ({stop_reason}); best validation loss "
            f"{self.best_valid:.4f}; model saved to {self.out_dir}"
        )
        return {"steps": self.step, "elapsed": self.elapsed, "best_valid": self.best_valid, "stop_reason": stop_reason}

    def _diverged(self, what: str, value: float) -> DivergedError:
        kept = f"the best model so far (validation loss {self.best_valid:.4f}) is in {self.out_dir}" \
            if self.best_step is not None else "no model was saved"
        return DivergedError(f"training diverged at step {self.step}: the {what} is {value} at learning rate "
                             f"{self.lr:.3g}; lower --lr (or raise --warmup-steps); {kept}")

    def _show(self, loss: float, rate: float, lr: float) -> None:
        cfg = self.config
        fraction = self.progress_fraction()
        eta = self.elapsed * (1 - fraction) / fraction if fraction > 0 else 0
        total = f"/{cfg.max_steps}" if cfg.max_steps else ""
        self.progress.update(
            f"step {self.step}{total} | epoch {self.epoch} | loss {loss:.4f} | {rate:,.0f} tok/s | lr {lr:.2e} | "
            f"{format_seconds(self.elapsed)} elapsed, ETA {format_seconds(eta)}",
            force=True,
        )
