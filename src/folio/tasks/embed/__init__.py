"""`folio embed`: sentence embeddings (MiniLM) and ELMo's contextual word vectors (`ContextualEmbedder`)."""

from folio.tasks.embed.contextual import ContextualEmbedder

__all__ = ["ContextualEmbedder"]
