"""Corpora, vocabularies and batching: the first half of text → batches → model."""
