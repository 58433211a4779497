"""`folio classify`: sequence classification (IMDb sentiment by default). See `folio.tasks` for the files."""

from folio.tasks.classify.recipe import (
    ClassifyTrainOptions,
    TextClassifier,
    _from_language_model,
    classification_metrics,
    discriminative_groups,
    load_splits,
    train,
)

__all__ = ["ClassifyTrainOptions", "TextClassifier", "_from_language_model", "classification_metrics",
           "discriminative_groups", "load_splits", "train"]
