"""`folio export`: ONNX (run under onnxruntime) and TorchScript exports match PyTorch to 1e-4, for every
exportable model kind, at batch sizes and lengths other than the traced ones."""

import json
import subprocess

import pytest
import torch

from folio.data.text import TextCleaner, WordVocab
from folio.data.vocab import CharVocab
from folio.errors import ConfigError
from folio.export import export
from folio.models.classifier import ClassifierConfig, RecurrentClassifier
from folio.models.rnn_lm import RNNLanguageModel, RNNLMConfig
from folio.models.transformer import GPT, GPTConfig, TransformerClassifier, TransformerClassifierConfig
from folio.training.checkpoint import save_checkpoint

pytest.importorskip("onnxruntime")


def _lm(root, model):
    vocab = CharVocab("abcdefgh \n")
    save_checkpoint(root, model, {"task": "lm", "model": model.config.to_dict()}, write_extras=lambda d: vocab.save(d / "vocab.json"))
    return root


def _classifier(root, model):
    cleaner = TextCleaner()
    words = WordVocab.fit([["good", "bad", "film"]], 10, 4, cleaner=cleaner)
    config = {"task": "classify", "model": model.config.to_dict(), "labels": ["neg", "pos"],
              "text": {"tokenizer": "word", "max_len": 50, **cleaner.to_dict()}}
    save_checkpoint(root, model, config, write_extras=words.save)
    return root


def _models(tmp_path):
    torch.manual_seed(0)
    yield "gru", _lm(tmp_path / "gru", RNNLanguageModel(RNNLMConfig(10, "gru", 2, 16)))
    yield "lstm", _lm(tmp_path / "lstm", RNNLanguageModel(RNNLMConfig(10, "lstm", 2, 16, embedding_dim=8)))
    yield "gpt", _lm(tmp_path / "gpt", GPT(GPTConfig(10, layers=2, heads=2, hidden=16, context=16)))
    yield "rnn-classifier", _classifier(tmp_path / "clf", RecurrentClassifier(ClassifierConfig(vocab_size=8, hidden=8, embedding_dim=8)))
    yield "transformer-classifier", _classifier(tmp_path / "tclf", TransformerClassifier(
        TransformerClassifierConfig.small(8, 2, layers=1, hidden=16, heads=2, max_len=64)))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exports_match_pytorch(tmp_path, fmt):
    for kind, directory in _models(tmp_path):
        report = export(directory, fmt)
        assert report["max_abs_diff"] <= 1e-4, kind
        assert (directory / ("model.onnx" if fmt == "onnx" else "model.torchscript.pt")).stat().st_size > 1000


def test_onnx_language_model_steps_one_character_at_a_time(tmp_path):
    import onnxruntime

    torch.manual_seed(0)
    model = RNNLanguageModel(RNNLMConfig(10, "gru", 2, 16)).eval()
    export(_lm(tmp_path / "gru", model), "onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "gru" / "model.onnx"))
    ids = torch.randint(0, 10, (1, 12))
    with torch.no_grad():
        full, _ = model(ids)
    h = torch.zeros(2, 1, 16).numpy()
    for t in range(12):  # generation: T = 1 per call, the state passed back in
        logits, h = session.run(None, {"ids": ids[:, t : t + 1].numpy(), "h": h})
        assert abs(logits[0, 0] - full[0, t].numpy()).max() < 1e-4


def test_quantized_export_and_cli(tmp_path, folio_cmd):
    directory = _classifier(tmp_path / "clf", RecurrentClassifier(ClassifierConfig(vocab_size=8, hidden=8, embedding_dim=8)))
    result = subprocess.run([*folio_cmd, "export", "--model", str(directory), "--quantize"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["int8"]["max_abs_diff_vs_pytorch"] < 0.1  # int8 weights: close, not equal
    assert set(report["int8"]["ms_per_batch_8x32"]) == {"float32", "int8"}
    bad = subprocess.run([*folio_cmd, "export", "--model", str(tmp_path / "nothing")], capture_output=True, text=True)
    assert bad.returncode == 2 and "no config.json" in bad.stderr
    with pytest.raises(ConfigError, match="--quantize applies to ONNX"):
        export(directory, "torchscript", quantize=True)
