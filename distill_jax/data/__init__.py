"""Data: named sources that return a :class:`Dataset`, and deterministic numpy batches."""
from distill_jax.data.batches import (batch_indices, eval_batches, iterate_train, local_indices,
                                      steps_per_epoch, train_batch)
from distill_jax.data.dataset import Dataset, split_train_val
from distill_jax.data.sources import SOURCES, load

__all__ = ["Dataset", "SOURCES", "load", "split_train_val", "train_batch", "batch_indices",
           "iterate_train", "eval_batches", "steps_per_epoch", "local_indices"]
