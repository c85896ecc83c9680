"""Data: named sources that return a :class:`Dataset`, and deterministic batch indices."""
from distill_jax.data.batches import batch_indices, local_indices, steps_per_epoch
from distill_jax.data.dataset import Dataset, seeded_split
from distill_jax.data.sources import SOURCES, load

__all__ = ["Dataset", "SOURCES", "load", "seeded_split", "batch_indices", "steps_per_epoch",
           "local_indices"]
