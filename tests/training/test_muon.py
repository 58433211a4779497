"""Muon: Newton-Schulz orthogonalisation, which parameters it takes, and its steps against a hand computation."""

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from folio.models.gpt import GPT, GPTConfig
from folio.training.muon import Muon, orthogonalize, split_for_muon


@pytest.mark.parametrize("shape", [(32, 32), (48, 16), (16, 48)])
def test_orthogonalize_flattens_the_singular_values(shape):
    torch.manual_seed(0)
    k = min(shape)
    u, _ = torch.linalg.qr(torch.randn(shape[0], k))
    v, _ = torch.linalg.qr(torch.randn(shape[1], k))
    g = u @ torch.diag(torch.logspace(0, 1.5, k)) @ v.T  # singular values from 1 to 31.6
    after = torch.linalg.svdvals(orthogonalize(g))
    assert after.min() > 0.5 and after.max() < 1.3  # the quintic iteration's band, not exactly 1
    assert orthogonalize(g).shape == g.shape and orthogonalize(g).dtype == g.dtype


def test_hidden_matrices_go_to_muon_embeddings_head_biases_and_norms_to_adamw():
    gpt = GPT(GPTConfig(vocab_size=20, layers=2, heads=2, hidden=16, context=8))
    groups = split_for_muon([{"params": list(gpt.parameters()), "lr_scale": 0.5}], gpt)
    names = {id(p): n for n, p in gpt.named_parameters()}
    muon = sorted(names[id(p)] for g in groups if g["muon"] for p in g["params"])
    assert len(muon) == 12 and all(n.endswith("proj.weight") or n.endswith(("fc1.weight", "fc2.weight")) for n in muon)
    assert all(g["lr_scale"] == 0.5 for g in groups)  # other settings travel with both halves
    adamw = {names[id(p)] for g in groups if not g["muon"] for p in g["params"]}
    assert "embedding.weight" in adamw and not any(n.endswith("weight") and "norm" not in n and "proj" in n for n in adamw)


def test_a_muon_step_is_the_orthogonalised_nesterov_momentum():
    torch.manual_seed(0)
    layer = nn.Linear(6, 3, bias=False)
    w0 = layer.weight.detach().clone()
    opt = Muon([{"params": [layer.weight], "muon": True}], lr=0.1, momentum=0.9, weight_decay=0.5)
    g = torch.randn(3, 6)
    layer.weight.grad = g.clone()
    opt.step()
    # momentum buffer = g; Nesterov direction = g + 0.9 g; decay 1 - 0.1·0.5; wide matrix: scale 1
    expected = w0 * (1 - 0.05) - 0.1 * orthogonalize(1.9 * g)
    torch.testing.assert_close(layer.weight.detach(), expected)
    with pytest.raises(ValueError, match="matrices only"):
        Muon([{"params": [nn.Parameter(torch.zeros(3))], "muon": True}])


def test_its_adamw_half_matches_torch_adamw():
    torch.manual_seed(0)
    a, b = nn.Parameter(torch.randn(5)), nn.Parameter(torch.randn(5))
    b.data.copy_(a.data)
    ours = Muon([{"params": [a], "muon": False}], lr=0.01, betas=(0.9, 0.99), weight_decay=0.1)
    theirs = torch.optim.AdamW([b], lr=0.01, betas=(0.9, 0.99), weight_decay=0.1)
    for _ in range(5):
        g = torch.randn(5)
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
    torch.testing.assert_close(a.detach(), b.detach())


@pytest.mark.slow
def test_two_processes_share_the_orthogonalisation_and_agree_with_one(tmp_path):
    """Under torchrun each process orthogonalises every other matrix; after the all-reduce both hold the
    weights a single process computes."""
    script = tmp_path / "muon_ddp.py"
    script.write_text(
        "import torch, torch.distributed as dist\n"
        "from torch import nn\n"
        "from folio.training.muon import Muon, split_for_muon\n"
        "def model():\n"
        "    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 12), nn.Linear(12, 3))\n"
        "def run(m):\n"
        "    opt = Muon(split_for_muon([{'params': list(m.parameters())}], m), lr=0.05)\n"
        "    for step in range(3):\n"
        "        torch.manual_seed(100 + step)\n"
        "        m(torch.randn(5, 8)).square().sum().backward()  # the same batch everywhere: gradients agree\n"
        "        opt.step(); opt.zero_grad()\n"
        "    return torch.cat([p.detach().flatten() for p in m.parameters()])\n"
        "dist.init_process_group('gloo')\n"
        "shared = run(model())\n"
        "both = [torch.empty_like(shared) for _ in range(2)]\n"
        "dist.all_gather(both, shared)\n"
        "dist.destroy_process_group()\n"
        "alone = run(model())  # no process group: this process does every matrix itself\n"
        "assert torch.equal(both[0], both[1]), 'the processes disagree'\n"
        "assert torch.allclose(both[0], alone, atol=1e-6), (both[0] - alone).abs().max()\n"
        "print('agree')\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("agree") == 2
