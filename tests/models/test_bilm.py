"""ELMo's biLM: both directions learn, layers are contextual (a static embedding is not), padding never
reaches a real token, a character CNN gives unseen words vectors of their own, and the classifier over
a frozen biLM keeps it frozen while it learns the mix."""

from __future__ import annotations

import random

import pytest
import torch

from folio.data.windows import make_batches
from folio.models.bilm import BiLM, BiLMConfig, ScalarMix, word_chars
from folio.models.classifier import ClassifierConfig, ELMoClassifier, ELMoClassifierConfig
from folio.tasks.lm.data import fit_vocab, spellings

RIVER = ["the boat drifted to the bank of the river", "fish swam by the muddy bank of the stream",
         "we sat on the grassy bank near the water", "reeds grew along the bank of the lake"]
MONEY = ["she paid the loan at the bank downtown", "the bank raised the interest on savings",
         "he opened an account at the bank today", "the bank approved the mortgage and the loan"]


def context_corpus(sentences: int = 1200, seed: int = 0) -> str:
    """Sentences about rivers and about money, each using "bank", in a seeded random order."""
    rng = random.Random(seed)
    return "\n".join(rng.choice(RIVER if rng.random() < 0.5 else MONEY) for _ in range(sentences)) + "\n"


@pytest.fixture(scope="module")
def trained():
    """A tiny biLM (word level) trained for 150 steps on the river/money corpus: its vocabulary and model,
    with each direction's loss before and after."""
    torch.manual_seed(0)
    text = context_corpus()
    vocab = fit_vocab("word", text, vocab_size=100, oov_buckets=4)
    ids = vocab.encode_tensor(text)
    model = BiLM(BiLMConfig(vocab_size=len(vocab), layers=2, hidden=32, dropout=0.0))
    batches = make_batches(ids, 16, 16, stateful=False, seed=0)
    window = vocab.encode_tensor(context_corpus(200, seed=1))[:880].view(80, 11)  # held-out windows for the figures
    before = [x.item() for x in model.direction_losses(window)]
    _train(model, batches)
    after = [x.item() for x in model.direction_losses(window)]
    return vocab, model, before, after


def _train(model: BiLM, batches, steps: int = 150) -> None:
    """`steps` Adam steps (lr 1e-2) over `batches`; leaves the model in eval mode."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(steps):
        loss = model.loss(batches.batch(step // len(batches), step % len(batches)))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def test_both_directions_learn(trained):
    _, _, before, after = trained
    assert min(before) > 3.5  # ~ln(30 words): a guess
    assert after[0] < 1.0 and after[1] < 1.0, after  # the templates leave ~0.6 nats a word uncertain


def _bank_vectors(vocab, model, sentences, layer):
    out = []
    for sentence in sentences:
        tokens, ids = vocab.tokenize(sentence)
        layers = model.layer_outputs(torch.tensor([ids]))[0]  # (T, L + 1, 2H)
        out.append(layers[tokens.index("bank"), layer])
    return torch.stack(out)


def test_the_same_word_gets_different_vectors_in_different_contexts(trained):
    vocab, model, _, _ = trained
    with torch.no_grad():
        for layer in (1, 2):
            river = torch.nn.functional.normalize(_bank_vectors(vocab, model, RIVER, layer), dim=-1)
            money = torch.nn.functional.normalize(_bank_vectors(vocab, model, MONEY, layer), dim=-1)
            within = torch.cat([(river @ river.T)[~torch.eye(4, dtype=torch.bool)], (money @ money.T)[~torch.eye(4, dtype=torch.bool)]])
            across = (river @ money.T).flatten()
            assert within.mean() > across.mean() + 0.05, (layer, within.mean(), across.mean())  # senses cluster
            assert across.max() < 0.999  # the two senses are different vectors
        static = _bank_vectors(vocab, model, RIVER + MONEY, 0)  # the token layer: one vector per word, whatever the context
        assert torch.equal(static, static[:1].expand_as(static))


def test_padding_never_changes_a_real_tokens_layers():
    torch.manual_seed(1)
    model = BiLM(BiLMConfig(vocab_size=40, layers=2, hidden=8)).eval()
    short = torch.randint(1, 40, (1, 5))
    padded = torch.cat([short, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    mask = padded != 0
    alone = model.layer_outputs(short)
    batched = model.layer_outputs(torch.cat([padded, torch.randint(1, 40, (1, 9))]), torch.cat([mask, torch.ones(1, 9, dtype=torch.bool)]))
    torch.testing.assert_close(batched[:1, :5], alone, atol=1e-5, rtol=0)


def test_char_cnn_gives_unseen_words_vectors_of_their_own():
    torch.manual_seed(2)
    vocab = fit_vocab("word", "the cat sat on the mat", oov_buckets=1)
    model = BiLM(BiLMConfig(vocab_size=len(vocab), layers=1, hidden=8, char_cnn=True, max_chars=10)).eval()
    model.set_vocabulary(spellings(vocab))
    assert model.token_chars[vocab.token_to_id("cat")].tolist() == word_chars("cat", 10)
    unseen = torch.tensor([[word_chars("zebra", 10), word_chars("quokka", 10)]])  # (1, 2, W): both one bucket id
    ids = torch.tensor([[vocab.token_to_id("zebra"), vocab.token_to_id("quokka")]])
    assert ids[0, 0] == ids[0, 1]
    vectors = model.token_vectors(ids, unseen)[0]
    assert not torch.allclose(vectors[0], vectors[1])
    # A known word's vector from its spelling in the table equals the one from its own characters.
    cat = torch.tensor([[vocab.token_to_id("cat")]])
    torch.testing.assert_close(model.token_vectors(cat), model.token_vectors(cat, torch.tensor([[word_chars("cat", 10)]])))


def test_scalar_mix_starts_as_the_average_and_learns_weights():
    mix = ScalarMix(3)
    layers = torch.randn(2, 4, 3, 6)
    torch.testing.assert_close(mix(layers), layers.mean(2))
    mix(layers).sum().backward()
    assert mix.weights.grad is not None and mix.scale.grad is not None


def test_elmo_classifier_keeps_the_bilm_frozen_and_ignores_padding():
    torch.manual_seed(3)
    bilm = BiLMConfig(vocab_size=30, layers=1, hidden=8)
    classifier = ClassifierConfig(vocab_size=30, embedding_dim=6, hidden=5, extra_features=16, dropout=0.2)
    model = ELMoClassifier(ELMoClassifierConfig(bilm.to_dict(), classifier.to_dict(), features="x"))
    frozen = {k: v.clone() for k, v in model.bilm.state_dict().items()}
    ids = torch.tensor([[3, 4, 5, 6, 0, 0], [7, 8, 9, 10, 11, 12]])
    batch = type("B", (), {"ids": ids, "mask": ids != 0, "labels": torch.tensor([0, 1])})()
    model.train()
    assert not model.bilm.training  # no dropout inside the frozen biLM
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(3):
        model.loss(batch).backward()
        optimizer.step()
        optimizer.zero_grad()
    assert all(torch.equal(frozen[k], v) for k, v in model.bilm.state_dict().items())
    assert not torch.equal(model.mix.weights.detach(), torch.zeros(2))  # the task learned the mix
    model.eval()
    alone = model(ids[:1, :4])
    torch.testing.assert_close(model(ids)[:1], alone, atol=1e-5, rtol=0)


def test_sampled_softmax_trains_the_full_softmax():
    """Trained with a sampled softmax (8 ids a step of ~40), the biLM's full-softmax losses fall as with the
    full softmax, evaluation ignores the sampling, and the sampled gradient points where the full one does."""
    torch.manual_seed(0)
    text = context_corpus()
    vocab = fit_vocab("word", text, vocab_size=100, oov_buckets=4)
    model = BiLM(BiLMConfig(vocab_size=len(vocab), layers=2, hidden=32, dropout=0.0, softmax_samples=8))
    batches = make_batches(vocab.encode_tensor(text), 16, 16, stateful=False, seed=0)
    window = vocab.encode_tensor(context_corpus(200, seed=1))[:880].view(80, 11)

    batch = batches.batch(0, 0)
    for _ in range(20):  # the mean of 20 draws' gradients
        model.loss(batch).backward()
    sampled = model.head.weight.grad.clone()
    model.zero_grad()
    full_model = BiLM(BiLMConfig(vocab_size=len(vocab), layers=2, hidden=32, dropout=0.0))
    full_model.load_state_dict(model.state_dict())
    full_model.loss(batch).backward()
    cosine = torch.nn.functional.cosine_similarity(sampled.flatten(), full_model.head.weight.grad.flatten(), dim=0)
    assert cosine > 0.85, cosine  # each draw is noisy (~0.5), their mean points the full gradient's way (~0.92)

    _train(model, batches)
    full_model.load_state_dict(model.state_dict())
    full_model.eval()
    after = [x.item() for x in model.direction_losses(window)]
    assert after == [x.item() for x in full_model.direction_losses(window)]  # evaluation: the full softmax
    assert after[0] < 1.2 and after[1] < 1.2, after  # the full softmax's run reaches < 1.0 in as many steps
