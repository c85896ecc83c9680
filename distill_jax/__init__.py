"""distill_jax: partition, recombine and distill JAX/Flax models.

Every stage is a plain function over parameter pytrees; see README.md for the data flow.
"""
