"""`folio embed`: sentence embeddings."""
