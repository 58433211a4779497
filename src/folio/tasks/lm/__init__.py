"""`folio lm`: language models that generate (Char-RNN, GPT, Llama, LoRA fine-tuning). See `folio.tasks` for the files."""

from folio.tasks.lm.data import encode
from folio.tasks.lm.inference import LanguageModel
from folio.tasks.lm.options import LMTrainOptions
from folio.tasks.lm.recipe import train

__all__ = ["LMTrainOptions", "LanguageModel", "encode", "train"]
