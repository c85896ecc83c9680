"""distill_jax: partition, recombine and distill JAX/Flax models.

Every stage is a plain function over parameter pytrees; see README.md for the data flow.
"""
# Where the project lives; the notebooks install it from here in Colab (tests check they agree).
REPOSITORY = "https://github.com/distill-jax/distill_jax"
