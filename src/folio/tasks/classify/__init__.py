"""`folio classify`: sequence classification (IMDb sentiment by default). See `folio.tasks` for the files.

    options.py    ClassifyTrainOptions (`folio classify train`'s options) and the combinations it refuses
    data.py       the `--data` splits, the tokenizer fitted on them, texts → ids
    recipe.py     ClassifyRecipe: data → model → `run_training`; `build_model`, discriminative learning rates
    inference.py  TextClassifier: a checkpoint as a Python object (predict, evaluate, explain)
    metrics.py    probabilities of many texts at once, accuracy / precision / recall / f1 / ROC AUC
    cli.py        `folio classify train|predict|evaluate|explain`
    serve.py      the HTTP route (`POST /v1/classify`);  export.py: the export graph
"""

from folio.tasks.classify.data import load_splits
from folio.tasks.classify.inference import TextClassifier
from folio.tasks.classify.metrics import classification_metrics
from folio.tasks.classify.options import ClassifyTrainOptions
from folio.tasks.classify.recipe import ClassifyRecipe, _from_language_model, discriminative_groups, train

__all__ = ["ClassifyRecipe", "ClassifyTrainOptions", "TextClassifier", "_from_language_model", "classification_metrics",
           "discriminative_groups", "load_splits", "train"]
