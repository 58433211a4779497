"""User-facing recipes: each wires data, model, trainer and decoding for one job."""
