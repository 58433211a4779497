"""Model families, one file each. Every model exposes `loss(batch, ...)` for the shared trainer."""
