"""`folio lm` training through its Python API: what only the language-model path covers (it learns and
predicts, stateful streams and a GPT with Muon in bf16 resume exactly, Muon trains a GPT, two processes
under torchrun). The trainer's own behaviour is tested with a toy model in tests/training/test_trainer.py."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from folio.tasks.lm import LanguageModel, LMTrainOptions, train
from folio.training.config import TrainConfig

pytestmark = pytest.mark.slow  # every test here trains a language model for 20 s to minutes

GPT = {"arch": "gpt", "hidden": 32, "layers": 2, "heads": 2, "context": 24, "dropout": 0.1, "positions": "rope"}


def options(corpus, out, model=None, **train_kwargs):
    config = dict(lr=1e-2, warmup_steps=10, max_steps=60, eval_every=20, save_every=20, log_every=10, seed=3)
    config.update(train_kwargs)
    return LMTrainOptions(
        corpus=str(corpus), out=str(out), model=model or {"hidden": 32, "layers": 2, "dropout": 0.1},
        seq_len=24, batch_size=8, train=TrainConfig(**config), progress=False,
    )


def test_tiny_model_learns_a_repeated_pattern(small_corpus, tmp_path):
    summary = train(options(small_corpus, tmp_path / "m", max_steps=250, eval_every=50))
    # A uniform guess over the 27 characters costs ln(27) = 3.30 nats; the pattern is nearly deterministic.
    assert summary["best_valid"] < 0.5
    lm = LanguageModel.from_pretrained(tmp_path / "m")
    assert lm.predict_next("How are yo") == "u"
    records = [json.loads(line) for line in (tmp_path / "m" / "metrics.jsonl").read_text().splitlines()]
    assert {"train", "eval"} <= {r["kind"] for r in records}
    assert (tmp_path / "m" / "training_curve.png").stat().st_size > 1000


MUON_BF16_GPT = dict(model=GPT, optimizer="muon", precision="bf16")


@pytest.mark.parametrize("stateful,ema,extra", [(False, 0.0, {}), (True, 0.0, {}), (True, 0.9, {}), (False, 0.9, MUON_BF16_GPT)])
def test_interrupted_training_resumes_exactly(small_corpus, tmp_path, stateful, ema, extra):
    full = options(small_corpus, tmp_path / "full", ema_decay=ema, **extra)
    full.stateful = stateful
    train(full)

    class Interrupt(Exception):
        pass

    cut = options(small_corpus, tmp_path / "cut", ema_decay=ema, **extra)
    cut.stateful = stateful
    from folio.training import trainer as trainer_module

    original = trainer_module.Trainer.save_last

    def save_then_die(self):
        original(self)
        if self.step == 40:
            raise Interrupt

    trainer_module.Trainer.save_last = save_then_die
    try:
        with pytest.raises(Interrupt):
            train(cut)
    finally:
        trainer_module.Trainer.save_last = original
    resumed = options(small_corpus, tmp_path / "cut", ema_decay=ema, **extra)
    resumed.stateful = stateful
    resumed.resume = ""
    assert train(resumed)["steps"] == 60
    for checkpoint in ("last", "."):  # the weights, and the best model (the averaged weights with EMA)
        a = load_file(str(tmp_path / "full" / checkpoint / "model.safetensors"))
        b = load_file(str(tmp_path / "cut" / checkpoint / "model.safetensors"))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_muon_trains_a_gpt(small_corpus, tmp_path):
    summary = train(options(small_corpus, tmp_path / "m", model={**GPT, "dropout": 0.0}, max_steps=200, eval_every=100,
                            optimizer="muon", lr=3e-3, muon_lr=0.02))
    assert summary["best_valid"] < 0.5  # as the GRU above: the pattern is nearly deterministic


@pytest.mark.parametrize(("task", "options", "model"), [("lm", "LMTrainOptions", {"hidden": 32}),
                                                       ("pretrain", "PretrainOptions", {"arch": "bilm", "layers": 1, "hidden": 32})],
                         ids=["gru", "bilm"])
def test_two_process_ddp_run_on_cpu(small_corpus, tmp_path, task, options, model):
    script = (
        f"from folio.tasks.{task} import {options} as Options, train\n"
        "from folio.training.config import TrainConfig\n"
        f"train(Options(corpus={str(small_corpus)!r}, out={str(tmp_path / 'ddp')!r}, model={model!r},"
        " seq_len=24, batch_size=8, device='cpu', progress=False,"
        " train=TrainConfig(lr=1e-2, warmup_steps=10, max_steps=120, eval_every=60, save_every=60, seed=1)))\n"
    )
    (tmp_path / "run.py").write_text(script)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(tmp_path / "run.py")],
        capture_output=True, text=True, timeout=240, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(tmp_path / "ddp" / "last" / "trainer_state.pt", weights_only=False)
    assert state["world_size"] == 2 and len(state["ranks"]) == 2 and state["step"] == 120
    lines = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert len([line for line in lines if '"eval"' in line]) == 2  # rank 0 alone logs
    assert json.loads(lines[-1])["valid_loss"] < 1.5
    # rank 0 tokenized the corpus once; the other process mapped the same cache
    assert len(list((Path(os.environ["FOLIO_CACHE"]) / "tokens").glob("*.bin"))) == 1
