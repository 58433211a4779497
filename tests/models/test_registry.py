"""The one registry and loader (folio.models.registry): every arch resolves, older checkpoints' keys are read,
and every model loads through load_checkpoint."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from folio.errors import CheckpointError
from folio.models.registry import ARCHS, build_config, build_model, load_checkpoint, model_class, model_section
from folio.tokenizers import fit_tokenizer
from folio.training.checkpoint import save_checkpoint


def test_every_arch_names_a_config_whose_arch_field_is_that_name_and_a_module():
    for arch, family in ARCHS.items():
        config_class = build_config.__globals__["_resolve"](family.config)
        fields = {f.name: f.default for f in dataclasses.fields(config_class)}
        assert "arch" in fields, config_class
        assert fields["arch"] == arch or (arch, fields["arch"]) == ("lstm", "gru")  # one RNN LM class, two cells
        assert issubclass(model_class({"arch": arch}), torch.nn.Module)


@pytest.mark.parametrize("config, arch, extra", [
    ({"task": "classify", "model": {"vocab_size": 9, "arch": "lstm"}}, "rnn_classifier", {"cell": "lstm"}),
    ({"task": "classify", "model": {"vocab_size": 9}}, "rnn_classifier", {"cell": "gru"}),
    ({"task": "classify", "model": {"type": "sentence_head", "dim": 8}}, "sentence_head", {}),
    ({"task": "translate", "model_family": "transformer", "model": {"src_vocab_size": 9}}, "transformer_seq2seq", {}),
    ({"task": "translate", "model": {"src_vocab_size": 9}}, "rnn_seq2seq", {}),
    ({"task": "caption", "model": {"vocab_size": 9}}, "captioner", {}),
    ({"task": "lm", "model": {"vocab_size": 9}}, "gru", {}),
    ({"task": "lm", "model": {"vocab_size": 9, "arch": "gpt"}}, "gpt", {}),
])
def test_older_checkpoints_keys_are_read_as_one_arch(config, arch, extra):
    section = model_section(config)
    assert section["arch"] == arch and "type" not in section
    assert all(section[k] == v for k, v in extra.items())


def test_a_recurrent_classifier_written_before_the_registry_loads_and_predicts_the_same(tmp_path):
    tokenizer = fit_tokenizer("word", ["a good film", "a bad film"], 20)
    torch.manual_seed(0)
    model = build_model({"arch": "rnn_classifier", "vocab_size": len(tokenizer), "cell": "lstm", "hidden": 4,
                         "embedding_dim": 4}).eval()
    old = {k: v for k, v in model.config.to_dict().items() if k not in ("arch", "cell")} | {"arch": "lstm"}
    save_checkpoint(tmp_path, model, {"task": "classify", "model": old, "labels": ["neg", "pos"]},
                    write_extras=tokenizer.save_pretrained)
    loaded, vocab, config = load_checkpoint(tmp_path, "classify")
    assert loaded.config.cell == "lstm" and loaded.config.arch == "rnn_classifier" and len(vocab) == len(tokenizer)
    ids = torch.tensor([[2, 3, 4]])
    mask = torch.ones_like(ids, dtype=torch.bool)
    torch.testing.assert_close(loaded(ids, mask), model(ids, mask))


def test_an_unknown_arch_is_one_line_naming_the_file(tmp_path):
    tokenizer = fit_tokenizer("char", ["abc"])
    model = build_model({"arch": "gru", "vocab_size": len(tokenizer), "hidden": 4})
    save_checkpoint(tmp_path, model, {"task": "lm", "model": {**model.config.to_dict(), "arch": "mamba"}},
                    write_extras=tokenizer.save_pretrained)
    with pytest.raises(CheckpointError, match=r"config.json: unknown model arch 'mamba' \(Folio has gru, lstm"):
        load_checkpoint(tmp_path, "lm")
    with pytest.raises(CheckpointError, match="holds a 'lm' model, not a 'classify' model"):
        load_checkpoint(tmp_path, "classify")
