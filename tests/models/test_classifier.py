"""The recurrent classifier: padding never changes a result, the ablation does, and it learns."""

import pytest
import torch

from folio.data.text import ClassificationBatches, pad_sequences
from folio.errors import ConfigError
from folio.models.classifier import (
    ClassifierConfig,
    RecurrentClassifier,
    TransformerClassifier,
    TransformerClassifierConfig,
    reverse_within_length,
)
from folio.models.gpt import GPTConfig
from folio.training.config import TrainConfig
from folio.training.trainer import Trainer


def test_reverse_within_length_keeps_padding_in_place_and_undoes_itself():
    x = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]]).unsqueeze(-1).float()
    lengths = torch.tensor([3, 2])
    flipped = reverse_within_length(x, lengths)
    assert flipped.squeeze(-1).tolist() == [[3, 2, 1, 0], [5, 4, 0, 0]]
    assert torch.equal(reverse_within_length(flipped, lengths), x)


@pytest.mark.parametrize("arch", ["gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("pooling", ["last", "mean", "max", "max_mean"])
def test_padding_to_50_or_500_tokens_gives_the_same_score(arch, bidirectional, pooling):
    torch.manual_seed(0)
    config = ClassifierConfig(vocab_size=300, arch=arch, layers=2, hidden=16, embedding_dim=8,
                              bidirectional=bidirectional, pooling=pooling)
    model = RecurrentClassifier(config).eval()
    review = torch.randint(1, 300, (37,)).tolist()
    neighbours = [torch.randint(1, 300, (n,)).tolist() for n in (5, 50)]
    short_ids, short_mask = pad_sequences([review, *neighbours], length=50)
    long_ids, long_mask = pad_sequences([review, *neighbours], length=500)
    with torch.no_grad():
        short = model(short_ids, short_mask).softmax(-1)
        long = model(long_ids, long_mask).softmax(-1)
        alone = model(torch.tensor([review])).softmax(-1)
    torch.testing.assert_close(short, long, atol=1e-5, rtol=0)
    torch.testing.assert_close(short[0], alone[0], atol=1e-5, rtol=0)


def test_without_masks_padding_changes_the_score():
    torch.manual_seed(0)
    model = RecurrentClassifier(ClassifierConfig(vocab_size=50, hidden=8, embedding_dim=8, masking=False)).eval()
    ids = torch.randint(1, 50, (1, 10))
    with torch.no_grad():
        assert not torch.allclose(model(pad_sequences(ids.tolist(), 50)[0]), model(pad_sequences(ids.tolist(), 500)[0]))


def test_frozen_embeddings_stay_put():
    model = RecurrentClassifier(ClassifierConfig(vocab_size=20, hidden=4, embedding_dim=4, freeze_embedding=True))
    assert not model.embedding.weight.requires_grad


def test_a_tiny_synthetic_task_is_learned(tmp_path):
    """Label 1 when token 3 comes before token 4 in the sequence: order matters, bags of words fail."""
    generator = torch.Generator().manual_seed(0)

    def make(n):
        sequences, labels = [], []
        for _ in range(n):
            length = int(torch.randint(4, 16, (1,), generator=generator))
            seq = torch.randint(5, 20, (length,), generator=generator).tolist()
            a, b = torch.randperm(length, generator=generator)[:2].tolist()
            seq[a], seq[b] = 3, 4
            sequences.append(seq)
            labels.append(int(a < b))
        return sequences, labels

    train_seqs, train_labels = make(2000)
    test_seqs, test_labels = make(300)
    torch.manual_seed(0)
    model = RecurrentClassifier(ClassifierConfig(vocab_size=20, hidden=24, embedding_dim=8, dropout=0.0, pooling="max_mean"))
    batches = ClassificationBatches(train_seqs, train_labels, batch_size=32)
    config = TrainConfig(lr=1e-2, max_steps=300, warmup_steps=10, eval_every=1000, save_every=1000, log_every=1000)
    Trainer(model, batches, config, tmp_path, evaluate=lambda m: 0.0, saved_config={"task": "test"}, progress=False).train()
    ids, mask = pad_sequences(test_seqs)
    with torch.no_grad():
        accuracy = (model.eval()(ids, mask).argmax(-1) == torch.tensor(test_labels)).float().mean().item()
    assert accuracy > 0.9


@pytest.mark.parametrize("trunk, pooling", [("bert", "mean"), ("bert", "cls"), ("gpt", "last"), ("gpt", "mean")])
def test_a_transformer_classifier_ignores_padding(trunk, pooling):
    torch.manual_seed(0)
    if trunk == "bert":
        config = TransformerClassifierConfig.small(30, 3, layers=1, hidden=16, heads=2, max_len=32, pooling=pooling)
    else:
        gpt = GPTConfig(30, layers=1, heads=2, hidden=16, context=32).to_dict()
        config = TransformerClassifierConfig(None, 3, pooling, gpt=gpt)
    model = TransformerClassifier(config).eval()
    ids = torch.randint(1, 30, (2, 6))
    padded = torch.cat([ids, torch.zeros(2, 10, dtype=torch.long)], 1)  # the default mask: id 0 is padding
    with torch.no_grad():
        torch.testing.assert_close(model(padded), model(ids), atol=1e-5, rtol=1e-5)


def test_a_bert_classifier_of_pairs_with_the_pooler_ignores_padding():
    torch.manual_seed(0)
    config = TransformerClassifierConfig.small(30, 2, layers=1, hidden=16, heads=2, max_len=32, pooling="cls")
    config = TransformerClassifierConfig(config.bert, 2, "cls", pooler=True, cls_id=28, sep_id=29)
    model = TransformerClassifier(config).eval()
    ids = torch.tensor([[28, 5, 6, 29, 7, 8, 9, 29], [28, 5, 29, 7, 29, 0, 0, 0]])
    segments = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 0, 0, 0]])
    junk = torch.randint(1, 30, (2, 20))  # padding that holds real-looking ids: only the mask says it is padding
    mask = torch.cat([ids != 0, torch.zeros(2, 20, dtype=torch.bool)], 1)
    with torch.no_grad():
        alone = model(ids, ids != 0, segments)
        padded = model(torch.cat([ids, junk], 1), mask, torch.cat([segments, torch.ones(2, 20, dtype=torch.long)], 1))
        torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(model(ids, ids != 0), alone)  # the segments are read
    with pytest.raises(ConfigError, match="pooler .* --pooling cls"):
        TransformerClassifierConfig(config.bert, 2, "mean", pooler=True)
