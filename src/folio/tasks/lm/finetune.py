"""`folio lm train --init-from smollm2`: fine-tune a pretrained Llama-family model on a corpus, every weight or
low-rank adapters (`--lora-rank R`), with the one training loop.

The model and its tokenizer come from `folio.models.llama_weights` ("smollm2", a GGUF file, a Hugging Face
directory); the corpus is split as every language model's (90/5/5 by default), tokenized into the token cache
in the model's own tokens, and read in random windows. The checkpoint is a plain `folio lm` directory holding a Llama (`config.json` with arch "llama",
`model.safetensors`, the pretrained tokenizer): LoRA adapters are merged into the weights as they are written
(`folio.nn.lora`), so `folio lm sample/evaluate`, `folio serve` and `--init-from DIR` read it as any Llama.

    >>> from folio.tasks.lm.finetune import FineTuneOptions, fine_tune
    >>> fine_tune(FineTuneOptions(corpus="tinyshakespeare", out="runs/smollm2-shakespeare", lora_rank=16))  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

from folio.data.windows import make_batches
from folio.errors import ConfigError
from folio.models.llama_weights import load_pretrained
from folio.models.registry import build_model, load_weights, model_section
from folio.nn.lora import add_lora
from folio.tasks.lm.data import corpus_ids, save_vocab, train_valid_ids
from folio.tasks.lm.metrics import stream_loss
from folio.tasks.lm.options import LMTrainOptions
from folio.tasks.lm.recipe import TASK
from folio.tokenizers import load_tokenizer
from folio.training.run import Prepared, RunContext, run_training, trained_parameters


@dataclass
class FineTuneOptions(LMTrainOptions):
    """`folio lm train --init-from MODEL`: `LMTrainOptions` (corpus, split, seq_len, batch_size, train...) and the
    pretrained model, LoRA and validation settings. `model` may hold {"dropout": p} (default none)."""

    init_from: str = "smollm2"
    lora_rank: int = 0  # 0: train every weight; else adapters of this rank on the attention and feed-forward layers
    lora_alpha: float = 16.0  # the adapters' update is scaled by alpha / rank
    lora_dropout: float = 0.0
    eval_tokens: int = 8192  # validation reads this many tokens of the valid split (all of it: minutes on a CPU)

    def validate(self) -> None:
        super().validate()
        if self.lora_rank < 0:
            raise ConfigError(f"--lora-rank must be 0 (train every weight) or more, got {self.lora_rank}")
        if self.stateful:
            raise ConfigError("--stateful carries a recurrent state; a pretrained Transformer reads windows")
        if set(self.model) - {"dropout"}:
            raise ConfigError(f"--init-from {self.init_from} takes the model's shape from the pretrained file; "
                              f"{', '.join(sorted(set(self.model) - {'dropout'}))} cannot change")


class FineTuneRecipe:
    """The pretrained model (or the checkpoint being resumed) with LoRA adapters where asked, random windows of
    the training split in its tokens, and the loss on the first `eval_tokens` tokens of the validation split."""

    task = TASK

    def prepare(self, options: FineTuneOptions, context: RunContext) -> Prepared:
        dropout = float(options.model.get("dropout", 0.0))
        if context.resume_dir is not None:  # the merged weights of the last save
            model = build_model({**model_section(context.saved), "dropout": dropout})
            load_weights(model, context.resume_dir)
            vocab = load_tokenizer(context.resume_dir)
        else:
            model, vocab = load_pretrained(options.init_from, dropout=dropout)
        if options.lora_rank:
            add_lora(model, options.lora_rank, options.lora_alpha, options.lora_dropout)
        tokens = corpus_ids(options.corpus, options.split, vocab, context.dist)  # the token cache, as LMRecipe
        train_ids, valid_ids = train_valid_ids(tokens, options.corpus)  # (T,) memory-mapped
        valid_ids = valid_ids[: options.eval_tokens]
        if options.seq_len > model.config.context:
            raise ConfigError(f"--seq-len {options.seq_len} is longer than the model's context ({model.config.context})")
        batches = make_batches(train_ids, options.seq_len, options.batch_size, False, seed=options.train.seed,
                               rank=context.dist.rank, world_size=context.dist.world_size)
        config = model.config
        adapters = f"LoRA rank {options.lora_rank} (alpha {options.lora_alpha}), " if options.lora_rank else ""
        return Prepared(
            model=model,
            batches=batches,
            evaluate=lambda m: stream_loss(m, valid_ids, seq_len=options.seq_len, streams=options.eval_streams)[0],
            saved_config={
                "model": config.to_dict(),
                "data": {"corpus": options.corpus, "split": list(options.split), "seq_len": options.seq_len,
                         "batch_size": options.batch_size, "stateful": False, "tokenizer": vocab.kind},
                "fine_tune": {"init_from": str(options.init_from), "lora_rank": options.lora_rank,
                              "lora_alpha": options.lora_alpha, "lora_dropout": options.lora_dropout,
                              "eval_tokens": options.eval_tokens},
            },
            describe=f"{options.init_from} fine-tuned: LLAMA {config.layers}x{config.hidden}, {adapters}"
                     f"{trained_parameters(model):,} trained parameters, {len(vocab):,} pretrained tokens in the "
                     f"vocabulary, {len(train_ids):,} training tokens",
            write_extras=lambda directory: save_vocab(vocab, directory),
        )


def fine_tune(options: FineTuneOptions) -> dict:
    """Fine-tune a pretrained language model as `options` say; returns the trainer's summary."""
    return run_training(FineTuneRecipe(), options)


__all__ = ["FineTuneOptions", "FineTuneRecipe", "fine_tune"]
