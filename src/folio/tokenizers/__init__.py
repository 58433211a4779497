"""Text ↔ token ids for every task: one interface (`Tokenizer`), one `fit_tokenizer`, one `load_tokenizer`.

    >>> from folio.tokenizers import fit_tokenizer, load_tokenizer
    >>> tok = fit_tokenizer("word", ["Hello, world!"], seq2seq=True)
    >>> tok.encode("Hello, world!"), tok.decode(tok.encode("Hello, world!")), tok.eos_id
    ([6, 5, 7, 4], 'Hello, world!', 2)

| kind       | class                   | for                                  | special ids                   |
|------------|-------------------------|--------------------------------------|-------------------------------|
| char       | `CharTokenizer`         | character LM (no specials); dates translation (seq2seq) | none, or <pad> <s> </s> <unk> |
| word       | `WordTokenizer`         | classifier / ULMFiT LM: cleaned words + hashed OOV buckets | <pad>              |
| word       | `WordPunctTokenizer`    | translation, captions (seq2seq): words and punctuation | <pad> <s> </s> <unk>   |
| bpe        | `ByteLevelBPETokenizer` | language models: lossless byte-level BPE | <pad> (ids shifted by one)  |
| bpe        | `MetaspaceBPETokenizer` | translation (seq2seq)                 | <pad> <s> </s> <unk> trained in |
| subword    | `WordPieceTokenizer`    | classifier: WordPiece on cleaned text | <pad>, [UNK] (ids shifted)    |
| pretrained | `PretrainedTokenizer`   | MiniLM's own WordPiece               | [PAD]=0, [UNK], [CLS], [SEP]  |
| pretrained_lm | `pretrained_lm.PretrainedLMTokenizer` | a pretrained causal LM (SmolLM2) | the model's own; no padding |

Files: `save_pretrained(directory)` writes a checkpoint directory's `vocab.json` (plus the library's
`tokenizer.json` for the Hugging Face-backed kinds); `save(path)` one self-contained JSON file (a
translation checkpoint's `src_tokenizer.json`). `load_tokenizer` reads both, and every older format.
"""

from folio.tokenizers.base import HF_FILE, PAD_ID, PADDING_ONLY, SEQ2SEQ_SPECIALS, VOCAB_FILE, TableTokenizer, Tokenizer
from folio.tokenizers.chars import CharTokenizer
from folio.tokenizers.cleaning import TextCleaner, truncate
from folio.tokenizers.hf import (
    ByteLevelBPETokenizer,
    HFTokenizer,
    MetaspaceBPETokenizer,
    PretrainedTokenizer,
    WordPieceTokenizer,
)
from folio.tokenizers.kinds import fit_tokenizer, load_tokenizer
from folio.tokenizers.words import SPACE, WordPunctTokenizer, WordTokenizer, stable_bucket

__all__ = [
    "HF_FILE", "PAD_ID", "PADDING_ONLY", "SEQ2SEQ_SPECIALS", "SPACE", "VOCAB_FILE",
    "Tokenizer", "TableTokenizer", "HFTokenizer",
    "CharTokenizer", "WordTokenizer", "WordPunctTokenizer",
    "ByteLevelBPETokenizer", "MetaspaceBPETokenizer", "WordPieceTokenizer", "PretrainedTokenizer",
    "TextCleaner", "truncate", "stable_bucket",
    "fit_tokenizer", "load_tokenizer",
]
