"""What several test files share, in one place (test files never import each other).

    from tests.helpers import PATTERN, folio_command, synthetic_reviews

corpora: tiny synthetic data sets; processes: the console script, free ports, waiting for a server;
toy: a toy model and batches for the trainer's own tests.
"""

from tests.helpers.corpora import (
    FILLER,
    NEGATIVE,
    NUMBERS,
    PATTERN,
    POSITIVE,
    TOPICS,
    number_pairs,
    synthetic_reviews,
    topic_documents,
)
from tests.helpers.processes import ForkServer, folio_command, free_port, run_folio, serving, wait_until_healthy
from tests.helpers.toy import ToyBatch, ToyBatches, ToyRecurrent, ToyRegressor

__all__ = [
    "FILLER", "NEGATIVE", "NUMBERS", "PATTERN", "POSITIVE", "TOPICS", "number_pairs", "synthetic_reviews", "topic_documents",
    "ForkServer", "folio_command", "free_port", "run_folio",
    "serving", "wait_until_healthy",
    "ToyBatch", "ToyBatches", "ToyRecurrent", "ToyRegressor",
]
