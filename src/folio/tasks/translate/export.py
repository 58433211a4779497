"""`folio export` for translation models (`folio.export` runs, checks and writes the graphs).

A translation model (recurrent or Transformer) becomes two graphs, as ONNX encoder–decoders usually are, since
the output loop depends on the data. `encoder`: `(src (B, S) int64, src_lengths (B,) int64) → the decoder's
initial state`; `decoder_step`: `(tokens (N,) int64, *state) → (logits (N, V), the state tensors that changed,
as NAME_out, attention (N, S))`. The state, by family:

- recurrent: `h (L, N, H)[, c][, feed (N, H)], memory (N, S, Dm)[, keys (N, S, K)], mask (N, S) bool`;
  h, c and feed (input feeding's previous attentional vector) change at every step. Without attention
  the step reads h[, c] alone and has no attention output (the encoder still returns the memory);
- Transformer: `mask (N, S) bool, cross_keys, cross_values (L, N, heads, S, d), self_keys,
  self_values (L, N, heads, t, d)`: the per-layer key/value caches, the self-attention ones growing by
  one position per step (t = 0 after the encoder), so a step costs one position's computation.

Greedy decoding: `state = encoder(src, src_lengths)` by name, tokens = SOS; then `logits, *new[,
attention] = decoder_step(tokens, *state)`, put each NAME_out back as NAME, tokens = argmax, until EOS.
The report's `decoding` names the state, what replaces what, and the SOS/EOS ids; `graphs` every
input's and output's shape. Beam search keeps N = B × beams rows: repeat each sentence's state rows,
and after each step take the changing ones' rows of the surviving hypotheses.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from folio.export_api import Graph
from folio.models.seq2seq import DecoderState, Seq2Seq
from folio.models.transformer_seq2seq import TransformerDecoderState
from folio.nn.gru import FastGRU
from folio.tasks.translate import Translator


class _Seq2SeqEncoder(nn.Module):
    """(src (B, S), src_lengths (B,)) → the recurrent decoder's initial state, as the tensors `names`."""

    def __init__(self, model, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, ...]:
        state = self.model.encode(src, src_lengths)
        h, c = state.rnn if isinstance(state.rnn, tuple) else (state.rnn, None)
        values = {"h": h, "c": c, "feed": state.feed, "memory": state.memory, "keys": state.keys, "mask": state.mask}
        return tuple(values[name] for name in self.names)


class _Seq2SeqStep(nn.Module):
    """(tokens (N,), *state) → (logits (N, V), h[, c][, feed], attention (N, S) when the model attends)."""

    def __init__(self, model, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, tokens: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        s = dict(zip(self.names, state, strict=True))
        rnn = (s["h"], s["c"]) if "c" in s else s["h"]
        # Luong dot has no key projection: keys=None makes the attention score the memory itself.
        decoder_state = DecoderState(rnn, s.get("feed"), s.get("memory"), s.get("keys"), s.get("mask"))
        logits, new, weights = self.model.decode_step(tokens, decoder_state)
        rnn = new.rnn if isinstance(new.rnn, tuple) else (new.rnn,)
        feed = (new.feed,) if new.feed is not None else ()
        return (logits, *rnn, *feed, *(() if weights is None else (weights,)))


def _cross_cache(block, memory: Tensor) -> tuple[Tensor, Tensor]:
    """What a decoder block's cross-attention computes from the memory at the first step, (N, heads, S, d) each."""
    attn = block.cross_attn
    return attn._split(attn.k_proj(memory)), attn._split(attn.v_proj(memory))


class _TransformerEncoder(nn.Module):
    """(src (B, S), src_lengths (B,)) → mask (B, S), cross-attention keys/values of every decoder layer
    (L, B, heads, S, d), and empty self-attention caches (L, B, heads, 0, d)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, ...]:
        state = self.model.encode(src, src_lengths)
        keys, values = zip(*(_cross_cache(block, state.memory) for block in self.model.decoder), strict=True)
        cross_keys, cross_values = torch.stack(keys), torch.stack(values)  # (L, B, heads, S, d)
        empty = cross_keys[:, :, :, :0]  # (L, B, heads, 0, d): nothing decoded yet
        return state.mask, cross_keys, cross_values, empty, empty


class _TransformerStep(nn.Module):
    """(tokens (N,), mask, cross_keys, cross_values, self_keys, self_values) → (logits (N, V), self_keys and
    self_values one position longer, attention (N, S): the last layer's cross-attention, mean over heads)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor, mask: Tensor, cross_keys: Tensor, cross_values: Tensor, self_keys: Tensor,
                self_values: Tensor) -> tuple[Tensor, ...]:
        caches = [{"self": (self_keys[i], self_values[i]), "cross": (cross_keys[i], cross_values[i])}
                  for i in range(len(self.model.decoder))]
        # The position of the new token is the cache's length, read from its shape, so it stays dynamic in the
        # graph. Cross-attention reads its cached keys/values and never the memory: any tensor stands in for it.
        state = TransformerDecoderState(cross_keys[0], mask, caches, self_keys.size(3))
        logits, new, weights = self.model.decode_step(tokens, state)
        grown = [c["self"] for c in new.caches]
        return logits, torch.stack([k for k, _ in grown]), torch.stack([v for _, v in grown]), weights


def _onnx_decoder(model):
    """The recurrent model with its FastGRU decoder swapped for a plain `nn.GRU` holding the same weights:
    FastGRU's one-step path calls `torch.gru_cell`, which has no ONNX symbolic, while `nn.GRU` maps onto
    ONNX's GRU operator. Same parameters, same maths."""
    if not isinstance(model.decoder, FastGRU):
        return model
    twin = copy.deepcopy(model)
    gru = model.decoder
    twin.decoder = nn.GRU(gru.input_size, gru.hidden_size, gru.num_layers, batch_first=gru.batch_first)
    twin.decoder.load_state_dict(gru.state_dict())
    return twin.eval()


def _source_example(vocab: int, pad_id: int) -> Callable[[int, int], tuple[Tensor, Tensor]]:
    def example(b: int, s: int) -> tuple[Tensor, Tensor]:
        lengths = torch.randint(1, s + 1, (b,))
        lengths[0] = s  # as a padded batch: the longest source fills the width
        mask = torch.arange(s)[None, :] < lengths[:, None]
        return torch.randint(3, vocab, (b, s)).masked_fill(~mask, pad_id), lengths

    return example


def graphs(directory: Path, fmt: str) -> tuple[list[Graph], dict]:
    """The encoder and decoder-step graphs of a translation model, and what a decoding loop needs to know."""
    translator = Translator.from_pretrained(directory)
    model, c = translator.model, translator.model.config
    sources = _source_example(c.src_vocab_size, c.pad_id)
    axes = {"src": {0: "batch", 1: "source"}, "src_lengths": {0: "batch"}, "tokens": {0: "batch"}, "logits": {0: "batch"},
            "mask": {0: "batch", 1: "source"}, "attention": {0: "batch", 1: "source"}}
    if isinstance(model, Seq2Seq):
        rnn = ["h", "c"] if c.cell == "lstm" else ["h"]
        changing = rnn + (["feed"] if model.uses_feed else [])
        attends = model.attention is not None
        keys = ["keys"] if c.attention in ("bahdanau", "luong_general") else []  # luong_dot scores the memory itself
        state = changing + (["memory", *keys, "mask"] if attends else [])
        # Without attention the step reads the RNN state alone, but the encoder still returns the memory: the
        # ONNX exporter fails on a packed RNN whose padded output nothing uses.
        encoded = state if attends else [*state, "memory"]
        encoder = _Seq2SeqEncoder(model, encoded)
        step = _Seq2SeqStep(_onnx_decoder(model) if fmt == "onnx" else model, state)
        axes.update({n: {1: "batch"} for n in rnn + [f"{n}_out" for n in rnn]})
        axes.update({n: {0: "batch"} for n in ("feed", "feed_out")})
        axes.update({n: {0: "batch", 1: "source"} for n in ("memory", "keys")})
    else:
        changing = ["self_keys", "self_values"]
        state = encoded = ["mask", "cross_keys", "cross_values", *changing]
        encoder, step, attends = _TransformerEncoder(model), _TransformerStep(model), True
        axes.update({n: {1: "batch", 3: "source"} for n in ("cross_keys", "cross_values")})
        axes.update({n: {1: "batch", 3: "decoded"} for n in changing})
        axes.update({f"{n}_out": {1: "batch", 3: "decoded+1"} for n in changing})
    step_outputs = ["logits", *(f"{n}_out" for n in changing), *(["attention"] if attends else [])]
    encoder.eval()
    step.eval()

    @torch.no_grad()
    def state_example(b: int, s: int) -> tuple[Tensor, ...]:
        """Tokens and a decoder state s // 3 steps into decoding b random sources of up to s tokens."""
        values = dict(zip(encoded, encoder(*sources(b, s)), strict=True))
        for _ in range(s // 3):
            out = dict(zip(step_outputs, step(torch.randint(c.tgt_vocab_size, (b,)), *(values[n] for n in state)), strict=True))
            values.update({n: out[f"{n}_out"] for n in changing})
        return (torch.randint(c.tgt_vocab_size, (b,)), *(values[n] for n in state))

    graphs = [Graph("encoder", encoder, sources, ["src", "src_lengths"], encoded, axes),
              Graph("decoder_step", step, state_example, ["tokens", *state], step_outputs, axes)]
    decoding = {"sos_id": c.sos_id, "eos_id": c.eos_id, "pad_id": c.pad_id,
                "state": state, "state_outputs": {f"{n}_out": n for n in changing},
                "source": ("src_tokenizer.json ids" + (" in reverse order" if translator.reverse_source else "") + ", then EOS"),
                "reverse_source": translator.reverse_source, "target": "tgt_tokenizer.json ids", "max_src_len": c.max_src_len}
    if not isinstance(model, Seq2Seq):
        decoding["max_decoded"] = model.positions.max_len  # positions the decoder has
    return graphs, decoding
