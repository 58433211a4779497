"""`folio export`: ONNX (run under onnxruntime) and TorchScript exports match PyTorch to 1e-4, for every
exportable model kind, at batch sizes and lengths other than the traced ones; a translation model's
encoder and decoder-step graphs decode, through onnxruntime alone, exactly what `Translator` decodes."""

import json
import subprocess
from pathlib import Path

import pytest
import torch

from folio.data.pairs import EOS, SOS, pad_batch
from folio.decoding.beam import greedy_decode
from folio.errors import ConfigError
from folio.export import export
from folio.models.classifier import (
    ClassifierConfig,
    RecurrentClassifier,
    TransformerClassifier,
    TransformerClassifierConfig,
)
from folio.models.gpt import GPT, GPTConfig
from folio.models.rnn_lm import RNNLanguageModel, RNNLMConfig
from folio.models.seq2seq import Seq2Seq, Seq2SeqConfig
from folio.models.transformer_seq2seq import TransformerSeq2Seq, TransformerSeq2SeqConfig
from folio.runtime import threads
from folio.tasks.translate import DataSpec, TranslateTrainOptions, Translator
from folio.tasks.translate import train as train_translator
from folio.tokenizers import CharTokenizer, TextCleaner, WordTokenizer, fit_tokenizer
from folio.training.checkpoint import save_checkpoint
from folio.training.config import TrainConfig
from tests.helpers import number_pairs

pytest.importorskip("onnxruntime")


def _lm(root, model):
    vocab = CharTokenizer("abcdefgh \n")
    save_checkpoint(root, model, {"task": "lm", "model": model.config.to_dict()}, write_extras=vocab.save_pretrained)
    return root


def _classifier(root, model):
    cleaner = TextCleaner()
    words = WordTokenizer.fit(["good bad film"], 10, 4, cleaner=cleaner)
    config = {"task": "classify", "model": model.config.to_dict(), "labels": ["neg", "pos"],
              "text": {"tokenizer": "word", "max_len": 50, **cleaner.to_dict()}}
    save_checkpoint(root, model, config, write_extras=words.save_pretrained)
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
    assert bad.returncode == 2 and "nothing does not exist" in bad.stderr
    with pytest.raises(ConfigError, match="--quantize applies to ONNX"):
        export(directory, "torchscript", quantize=True)


# ---- translation: encoder.onnx + decoder_step.onnx --------------------------------------------------
def _translation(root, family, model):
    src = fit_tokenizer("word", ["one two three four five six seven eight nine ten"], seq2seq=True)
    tgt = fit_tokenizer("word", ["un deux trois quatre cinq six sept huit neuf dix"], seq2seq=True)

    def tokenizers(directory):
        src.save(directory / "src_tokenizer.json")
        tgt.save(directory / "tgt_tokenizer.json")

    config = {"task": "translate", "model_family": family, "model": model.config.to_dict(), "data": {"reverse_source": False}}
    save_checkpoint(root, model, config, write_extras=tokenizers)
    return root


def _translation_models(tmp_path, names):
    torch.manual_seed(0)
    made = {  # 14 source and target ids: 4 specials + 10 words
        "gru-bahdanau": lambda: ("rnn", Seq2Seq(Seq2SeqConfig(14, 14, layers=2, embedding_dim=8, hidden=16))),
        "lstm-luong": lambda: ("rnn", Seq2Seq(Seq2SeqConfig(14, 14, cell="lstm", embedding_dim=8, hidden=16, bidirectional=False,
                                                            attention="luong_general", input_feeding=False))),
        "gru-no-attention": lambda: ("rnn", Seq2Seq(Seq2SeqConfig(14, 14, embedding_dim=8, hidden=16, attention="none"))),
        "transformer": lambda: ("transformer", TransformerSeq2Seq(TransformerSeq2SeqConfig(14, 14, layers=2, heads=2, hidden=16,
                                                                                          ff_dim=32))),
    }
    for name in names:
        yield name, _translation(tmp_path / name, *made[name]())


@pytest.fixture
def one_thread():
    """Tiny models run faster on one intra-op thread than on two that keep waking each other."""
    with threads(1):
        yield


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("fmt, names", [("onnx", ["gru-bahdanau", "lstm-luong", "gru-no-attention", "transformer"]),
                                        ("torchscript", ["gru-bahdanau", "transformer"])])
def test_translation_exports_two_graphs_matching_pytorch(tmp_path, fmt, names):
    suffix = ".onnx" if fmt == "onnx" else ".torchscript.pt"
    for kind, directory in _translation_models(tmp_path, names):
        report = export(directory, fmt)
        graphs = report["graphs"]
        assert report["max_abs_diff"] <= 1e-4 and all(g["max_abs_diff"] <= 1e-4 for g in graphs.values()), kind
        assert [Path(g["path"]).name for g in graphs.values()] == [f"encoder{suffix}", f"decoder_step{suffix}"]
        step = graphs["decoder_step"]
        assert step["inputs"] == ["tokens", *report["decoding"]["state"]], kind
        assert set(report["decoding"]["state"]) <= set(graphs["encoder"]["outputs"]), kind
        assert step["shapes"]["tokens"] == ["batch"] and step["shapes"]["logits"] == ["batch", 14], kind
        for out_name, name in report["decoding"]["state_outputs"].items():  # what comes back goes back in
            assert step["shapes"][out_name][:1] == step["shapes"][name][:1], kind
    rnn = export(tmp_path / "gru-bahdanau", fmt)["graphs"]["decoder_step"]
    assert rnn["inputs"] == ["tokens", "h", "feed", "memory", "keys", "mask"]
    assert rnn["shapes"]["h"] == [2, "batch", 16] and rnn["dtypes"]["mask"] == "bool"
    with pytest.raises(ConfigError, match="give a folder"):
        export(tmp_path / "transformer", fmt, out=tmp_path / f"model{suffix}")


@pytest.fixture(scope="module")
def trained_translators(tmp_path_factory):
    """A recurrent model with Bahdanau attention and input feeding, and a Transformer, on number words."""
    root = tmp_path_factory.mktemp("translate")
    pairs = root / "numbers.txt"
    pairs.write_text(number_pairs(2000, 0), encoding="utf-8")

    def train(name, arch, model, steps, lr, schedule):
        train_translator(TranslateTrainOptions(
            data=DataSpec(data=str(pairs)), out=str(root / name), tokenizer="word", arch=arch, model=model, batch_size=32,
            train=TrainConfig(lr=lr, max_steps=steps, warmup_steps=10, schedule=schedule, eval_every=steps, save_every=10_000,
                              log_every=steps),
            device="cpu", progress=False))
        return root / name

    with threads(1):  # see one_thread: several times faster here, more so on a busy machine
        return {"rnn": train("rnn", "rnn", {"hidden": 48, "embedding_dim": 24, "attention": "bahdanau", "dropout": 0.0}, 200,
                             1e-2, "cosine"),
                "transformer": train("transformer", "transformer", {"layers": 1, "hidden": 32, "heads": 2, "ff_dim": 64,
                                                                    "dropout": 0.0, "label_smoothing": 0.0}, 300, 3e-3,
                                     "inverse_sqrt")}


def _onnxruntime_greedy(report, sources, max_lengths):
    """Greedy decoding with onnxruntime alone: the encoder once, then decoder_step one token at a time."""
    import numpy as np
    import onnxruntime

    graphs, decoding = report["graphs"], report["decoding"]
    encoder = onnxruntime.InferenceSession(graphs["encoder"]["path"], providers=["CPUExecutionProvider"])
    step = onnxruntime.InferenceSession(graphs["decoder_step"]["path"], providers=["CPUExecutionProvider"])
    batch = pad_batch(sources)
    state = dict(zip(graphs["encoder"]["outputs"], encoder.run(None, {"src": batch.src.numpy(),
                                                                     "src_lengths": batch.src_lengths.numpy()}), strict=True))
    eos = decoding["eos_id"]
    tokens = np.full(len(sources), decoding["sos_id"], dtype=np.int64)
    outputs, finished = [], np.zeros(len(sources), dtype=bool)
    for t in range(int(max_lengths.max())):
        out = dict(zip(graphs["decoder_step"]["outputs"],
                       step.run(None, {"tokens": tokens, **{name: state[name] for name in decoding["state"]}}), strict=True))
        state.update({name: out[out_name] for out_name, name in decoding["state_outputs"].items()})
        tokens = out["logits"].argmax(-1)
        tokens[(t + 1 >= max_lengths) | finished] = eos  # the length limit, as greedy_decode
        outputs.append(tokens)
        finished |= tokens == eos
        if finished.all():
            break
    rows = np.stack(outputs, 1).tolist()
    return [row[: row.index(eos)] if eos in row else row for row in rows]


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("family", ["rnn", "transformer"])
def test_greedy_decoding_through_onnxruntime_gives_the_translators_tokens(trained_translators, tmp_path, family):
    directory = trained_translators[family]
    report = export(directory, "onnx", out=tmp_path / "onnx", quantize=family == "rnn")
    assert report["max_abs_diff"] <= 1e-4
    translator = Translator.from_pretrained(directory)
    texts = ["three one four", "two", "five six seven eight nine", "ten ten one", "eight two six"]
    sources = [translator.encode_source(t) for t in texts]
    max_lengths = (torch.tensor([len(s) for s in sources]) * 1.5 + 10).long()  # translate's defaults
    ours = _onnxruntime_greedy(report, sources, max_lengths.numpy())
    assert [translator.tgt_tokenizer.decode(ids) for ids in ours] == [t.text for t in translator.translate(texts)]
    batch = pad_batch(sources)
    with torch.no_grad():
        state = translator.model.encode(batch.src, batch.src_lengths)
        reference = greedy_decode(translator.model.decode_step, state, len(texts), SOS, EOS, max_lengths)
    assert ours == [h.tokens for h in reference]
    assert translator.tgt_tokenizer.decode(ours[0]) == "trois un quatre"  # trained: the check is not of noise
    if family == "rnn":
        int8 = report["graphs"]["decoder_step"]["int8"]
        assert int8["max_abs_diff_vs_pytorch"] < 0.1 and Path(int8["path"]).name == "decoder_step.int8.onnx"
