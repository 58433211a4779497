"""`folio lm`: language models (Char-RNN, GPT, masked-LM pretraining). See `folio.tasks` for the files."""

from folio.tasks.lm.recipe import LanguageModel, LMTrainOptions, encode, train

__all__ = ["LMTrainOptions", "LanguageModel", "encode", "train"]
