"""A model family's flags come from its config dataclass (folio.models.options): one flag per field name across
a task's archs, each arch's section from the flags it declares, and a flag of another arch refused."""

from __future__ import annotations

import argparse

import pytest

from folio.errors import ConfigError
from folio.models.options import add_model_flags, flag_fields, model_from_flags
from folio.models.transformer_seq2seq import TransformerSeq2SeqConfig

LM = ("gru", "lstm", "gpt", "bert", "bilm")
TRANSLATE = {"rnn": "rnn_seq2seq", "transformer": "transformer_seq2seq"}


def _parse(archs, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", choices=list(archs))
    parser.add_argument("--seq-len", type=int, default=100)  # a task's flag a derived default reads
    add_model_flags(parser, archs)
    return parser.parse_args(list(argv))


def test_a_field_several_archs_declare_is_one_flag_whose_help_names_the_archs_that_take_it():
    parser = argparse.ArgumentParser()
    add_model_flags(parser, LM)
    spellings = [s for action in parser._actions for s in action.option_strings]
    assert spellings.count("--hidden") == 1 and spellings.count("--heads") == 1
    helps = {action.option_strings[0]: action.help for action in parser._actions if action.option_strings}
    assert helps["--heads"] == "gpt, bert: attention heads (default: 4)"
    assert helps["--layers"] == "layers (default: 2)"  # every arch takes it, with one default
    assert all(action.default is None for action in parser._actions if action.dest in flag_fields("gpt"))


def test_each_arch_gets_the_flags_given_its_cli_defaults_and_derived_defaults_and_nothing_else():
    assert model_from_flags(_parse(LM, "--arch", "gpt", "--seq-len", "50"), LM) == {
        "layers": 2, "hidden": 128, "dropout": 0.2, "context": 50}
    assert model_from_flags(_parse(LM, "--arch", "gpt", "--context", "64", "--positions", "rope", "--heads", "2"),
                            LM) == {"layers": 2, "hidden": 128, "dropout": 0.2, "context": 64, "positions": "rope",
                                    "heads": 2}
    # the rest of a recurrent LM's CLI defaults are its dataclass defaults: left to them
    assert model_from_flags(_parse(LM, "--arch", "lstm", "--embedding-dim", "8"), LM) == {"embedding_dim": 8}
    # a derived default reads the model's own flags resolved: ff_dim is 4 × the --hidden given
    section = model_from_flags(_parse(TRANSLATE, "--arch", "transformer", "--hidden", "32"), TRANSLATE)
    assert section == {"layers": 1, "hidden": 32, "ff_dim": 128}
    assert TransformerSeq2SeqConfig(src_vocab_size=9, tgt_vocab_size=9, **section).label_smoothing == 0.1
    assert model_from_flags(_parse(TRANSLATE, "--arch", "rnn", "--no-input-feeding"), TRANSLATE) == {
        "input_feeding": False}


@pytest.mark.parametrize("archs, argv, needles", [
    (LM, ("--arch", "gru", "--positions", "rope"), ("--positions rope", "--arch gru", "--arch gpt")),
    (LM, ("--arch", "bert", "--softmax-samples", "8"), ("--softmax-samples 8", "--arch bert", "--arch bilm")),
    (LM, ("--arch", "gpt", "--objective", "mlm+nsp"), ("--objective mlm+nsp", "--arch bert")),
    (LM, ("--arch", "bilm", "--heads", "2"), ("--heads 2", "--arch gpt or --arch bert")),
    (TRANSLATE, ("--arch", "transformer", "--no-bidirectional"), ("--no-bidirectional", "--arch rnn")),
    (TRANSLATE, ("--arch", "transformer", "--tie-output"), ("--tie-output does not apply to --arch transformer",)),
])
def test_a_flag_of_another_arch_is_refused_in_one_line_naming_the_flag_and_the_arch(archs, argv, needles):
    with pytest.raises(ConfigError) as caught:
        model_from_flags(_parse(archs, *argv), archs)
    assert all(needle in str(caught.value) for needle in needles), str(caught.value)
