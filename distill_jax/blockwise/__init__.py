"""Heterogeneous (blockwise) training: student blocks trained independently against the
teacher's block activations, then stitched into one student (docs/blockwise.md)."""
from distill_jax.blockwise.budget import brute_force, choose, plan
from distill_jax.blockwise.jobs import (as_plain, assemble, check, student_fields, train_block,
                                        train_only)
from distill_jax.blockwise.stitch import fit_stitches, least_squares, stitch_models

__all__ = ["as_plain", "assemble", "brute_force", "choose", "fit_stitches", "least_squares", "plan",
           "stitch_models", "student_fields", "train_block", "train_only", "check"]
