"""`folio pretrain`: encoders pretrained by objectives that do not generate (BERT's masked LM and next-sentence
prediction, ELMo's biLM). See `folio.tasks` for the files."""

from folio.tasks.pretrain.inference import PretrainedEncoder
from folio.tasks.pretrain.options import PretrainOptions
from folio.tasks.pretrain.recipe import train

__all__ = ["PretrainOptions", "PretrainedEncoder", "train"]
