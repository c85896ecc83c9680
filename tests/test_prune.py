"""The ``prune`` recombination strategy (Minitron-style depth and width pruning) on tiny Llama
and BERT teachers: identity, exactness where the pruned units contribute nothing, importance
by hand, the key-value group rule, and the errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import models, recombine
from distill_jax.errors import InputError
from distill_jax.models import llama
from distill_jax.paths import flatten, unflatten
from distill_jax.recombine.prune import select_heads

LLAMA = dict(name="llama", vocab_size=50, hidden_size=32, num_heads=4, num_kv_heads=2,
             intermediate_size=48, num_layers=4, max_position=64)
BATCH = {"tokens": np.random.default_rng(0).integers(0, 50, (4, 12)).astype(np.int32)}
TEACHER = models.build(LLAMA, {})
T_PARAMS = flatten(TEACHER.init(jax.random.PRNGKey(0), BATCH))
HD = 8                                               # head_dim: 32 / 4


def _prune(teacher_flat, student_fields, model=TEACHER, batch=BATCH, rules=llama.PARTITION_RULES,
           **options):
  """(student model, student params (flat), accounting) pruned from ``teacher_flat``."""
  student = models.build({**model.config, **student_fields}, {})
  # Only the student's shapes matter (every array comes from the teacher): no init to compile.
  fresh = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype),
                       jax.eval_shape(student.init, jax.random.PRNGKey(1), batch))
  params = unflatten(teacher_flat)
  context = recombine.Context(model, params, batch)
  out, report = recombine.recombine(params, fresh, strategy="prune", rules=rules,
                                    context=context, **options)
  return student, flatten(out), report


def _logits(model, flat, batch=BATCH):
  return np.asarray(model.apply(unflatten(flat), batch)[0]["logits"])


def _edit(flat, **changes):
  """A copy of ``flat`` (numpy) with ``changes[path](array) -> array`` applied."""
  out = {k: np.array(v) for k, v in flat.items()}
  for path, fn in changes.items():
    out[path] = fn(out[path])
  return out


def _zero(flat, updates: list):
  """A copy with each ``(path, index)`` of ``updates`` set to 0 (``index``: ``np.s_[...]``)."""
  out = {k: np.array(v) for k, v in flat.items()}
  for path, where in updates:
    out[path][where] = 0.0
  return out


def test_same_shape_all_layers_is_the_teacher_exactly():
  student, params, report = _prune(T_PARAMS, {})
  assert set(params) == set(T_PARAMS)
  for path, value in T_PARAMS.items():
    np.testing.assert_array_equal(params[path], value)
  np.testing.assert_array_equal(_logits(student, params), _logits(TEACHER, T_PARAMS))
  assert report["teacher_layers"] == [0, 1, 2, 3] and report["importance"] == "activation"
  assert report["kept"] == {"hidden_size": 32, "num_heads": {f"layer_{i}": 4 for i in range(4)},
                            "num_kv_heads": {f"layer_{i}": 2 for i in range(4)},
                            "intermediate_size": {f"layer_{i}": 48 for i in range(4)}}
  assert report["reused_params"] == report["student_params"] == report["teacher_params"]


@pytest.mark.parametrize("importance", ["activation", "weight"])
def test_pruning_zeroed_neurons_and_identity_layers_keeps_the_logits(importance):
  # Neurons `drop` of every layer contribute nothing (gate/up columns and down rows zero);
  # layers 1 and 2 add nothing to the residual stream (output and down kernels zero).
  drop = np.array([1, 4, 5, 9, 13, 20, 21, 22, 30, 33, 34, 40, 41, 44, 46, 47])
  keep = np.setdiff1d(np.arange(48), drop)
  zeros = [(f"layer_{i}/mlp/{m}/kernel", np.s_[:, drop]) for i in range(4) for m in ("gate", "up")]
  zeros += [(f"layer_{i}/mlp/down/kernel", np.s_[drop]) for i in range(4)]
  zeros += [(f"layer_{i}/{k}/kernel", np.s_[:]) for i in (1, 2)
            for k in ("attention/output", "mlp/down")]
  teacher = _zero(T_PARAMS, zeros)
  student, params, report = _prune(teacher, {"intermediate_size": 32, "num_layers": 2},
                                   layers=(0, 3), importance=importance)
  assert report["teacher_layers"] == [0, 3]
  np.testing.assert_array_equal(params["layer_1/mlp/gate/kernel"],
                                teacher["layer_3/mlp/gate/kernel"][:, keep])
  np.testing.assert_array_equal(params["layer_0/mlp/down/kernel"],
                                teacher["layer_0/mlp/down/kernel"][keep])
  np.testing.assert_array_equal(params["layer_1/attention/query/kernel"],
                                teacher["layer_3/attention/query/kernel"])
  np.testing.assert_array_equal(_logits(student, params), _logits(TEACHER, teacher))
  assert report["kept"]["intermediate_size"] == {"layer_0": 32, "layer_1": 32}


def test_activation_importance_keeps_the_neurons_of_largest_mean_activation():
  # By hand from the teacher's captured gate and up outputs: a = silu(gate) * up.
  _, captured = TEACHER.apply(unflatten(T_PARAMS), BATCH, capture=True)
  expected = []
  for t in (0, 2):
    a = jax.nn.silu(captured[f"layer_{t}/mlp/gate"]) * captured[f"layer_{t}/mlp/up"]
    score = np.abs(np.asarray(a, np.float64)).mean(axis=(0, 1))
    expected.append(np.sort(np.argsort(-score)[:20]))
  _, params, _ = _prune(T_PARAMS, {"intermediate_size": 20, "num_layers": 2}, layers=(0, 2))
  for j, t in enumerate((0, 2)):
    np.testing.assert_array_equal(params[f"layer_{j}/mlp/up/kernel"],
                                  T_PARAMS[f"layer_{t}/mlp/up/kernel"][:, expected[j]])


def _channels(params, teacher, key="embed/embedding"):
  """The teacher channels the student kept, read off the embedding columns."""
  s, t = np.asarray(params[key]), np.asarray(teacher[key])
  return np.array([int(np.flatnonzero((t == s[:, [j]]).all(0))[0]) for j in range(s.shape[1])])


def _cols(heads):
  return (np.asarray(heads)[:, None] * HD + np.arange(HD)).ravel()


def test_head_selection_respects_key_value_groups():
  # 4 query heads in 2 groups ({0, 1}, {2, 3}).
  heads, groups = select_heads(np.array([5.0, 4.0, 1.0, 2.0]), 4, 2, 2, 2, "layer_0")
  assert heads.tolist() == [0, 3] and groups.tolist() == [0, 1]   # one per group, not 0 and 1
  heads, groups = select_heads(np.array([5.0, 0.0, 3.0, 3.0]), 4, 2, 2, 1, "layer_0")
  assert heads.tolist() == [2, 3] and groups.tolist() == [1]      # the whole group: 6 > 5
  heads, groups = select_heads(np.array([1.0, 4.0, 3.0, 2.0]), 4, 4, 2, 2, "bert")
  assert heads.tolist() == [1, 2] and groups.tolist() == [1, 2]   # BERT: every head a group
  with pytest.raises(InputError, match="do not fit the teacher's groups of 2"):
    select_heads(np.ones(4), 4, 2, 4, 1, "layer_0")


def test_dropping_a_kv_group_keeps_it_whole_with_its_query_heads():
  # 4 heads in 2 kv groups -> 2 heads in 1 group. Group 0's values are shrunk so its heads'
  # attention outputs are small: group 1 (query heads 2, 3, key/value columns 8:16) stays.
  teacher = _edit(T_PARAMS, **{f"layer_{i}/attention/value/kernel":
                               (lambda v: v * np.r_[[0.01] * HD, [1.0] * HD]) for i in range(4)})
  _, params, report = _prune(teacher, {"hidden_size": 16, "num_heads": 2, "num_kv_heads": 1},
                             num_heads=2)
  c = _channels(params, teacher)
  assert len(set(c)) == 16
  for i in range(4):
    t = lambda name: teacher[f"layer_{i}/attention/{name}/kernel"]
    s = lambda name: params[f"layer_{i}/attention/{name}/kernel"]
    np.testing.assert_array_equal(s("query"), t("query")[c][:, _cols([2, 3])])
    np.testing.assert_array_equal(s("key"), t("key")[c][:, _cols([1])])
    np.testing.assert_array_equal(s("value"), t("value")[c][:, _cols([1])])
    np.testing.assert_array_equal(s("output"), t("output")[_cols([2, 3])][:, c])
    np.testing.assert_array_equal(params[f"layer_{i}/mlp/down/kernel"],
                                  teacher[f"layer_{i}/mlp/down/kernel"][:, c])
    np.testing.assert_array_equal(params[f"layer_{i}/attn_norm/scale"],
                                  teacher[f"layer_{i}/attn_norm/scale"][c])
  assert report["kept"]["num_heads"]["layer_0"] == 2
  assert report["kept"]["num_kv_heads"]["layer_0"] == 1 and report["kept"]["hidden_size"] == 16


def test_fewer_query_heads_keep_the_same_number_in_every_group_and_slice_consistently():
  # 4 heads / 2 groups -> 2 heads / 2 groups: one query head per group. Channels `drop` and
  # heads 0 and 3 carry no weight in the teacher, so "weight" importance drops exactly them,
  # and the student's attention equals the teacher's restricted to the kept channels.
  drop = np.array([0, 3, 4, 8, 11, 12, 15, 17, 18, 21, 23, 24, 26, 27, 29, 31])
  keep = np.setdiff1d(np.arange(32), drop)
  zeros = [("embed/embedding", np.s_[:, drop]), ("final_norm/scale", np.s_[drop])]
  for i in range(4):
    p = f"layer_{i}/"
    zeros += [(p + n, np.s_[drop]) for n in ("attn_norm/scale", "mlp_norm/scale")]
    zeros += [(p + f"attention/{n}/kernel", np.s_[drop]) for n in ("query", "key", "value")]
    zeros += [(p + f"mlp/{n}/kernel", np.s_[drop]) for n in ("gate", "up")]
    zeros += [(p + "attention/output/kernel", np.s_[:, drop]),
              (p + "mlp/down/kernel", np.s_[:, drop]),
              (p + "attention/query/kernel", np.s_[:, _cols([0, 3])]),
              (p + "attention/output/kernel", np.s_[_cols([0, 3])])]
  teacher = _zero(T_PARAMS, zeros)
  student, params, report = _prune(teacher, {"hidden_size": 16, "num_heads": 2},
                                   importance="weight", num_heads=2)
  np.testing.assert_array_equal(params["embed/embedding"], teacher["embed/embedding"][:, keep])
  np.testing.assert_array_equal(params["final_norm/scale"], teacher["final_norm/scale"][keep])
  np.testing.assert_array_equal(params["layer_2/attention/query/kernel"],
                                teacher["layer_2/attention/query/kernel"][keep][:, _cols([1, 2])])
  np.testing.assert_array_equal(params["layer_2/attention/key/kernel"],
                                teacher["layer_2/attention/key/kernel"][keep])
  assert report["kept"]["num_kv_heads"]["layer_2"] == 2
  # Module-level check: the teacher attention on inputs that are 0 on the dropped channels.
  x = np.zeros((2, 7, 32), np.float32)
  x[..., keep] = np.random.default_rng(1).normal(size=(2, 7, 16))
  positions, mask = jnp.broadcast_to(jnp.arange(7), (2, 7)), jnp.ones((2, 7), jnp.int32)
  attend = lambda cfg, flat, h: llama.Attention(cfg).apply(
      {"params": {k.split("/")[2]: {"kernel": v} for k, v in flat.items()
                  if k.startswith("layer_2/attention/")}}, h, positions, mask)[0]
  t_cfg = llama.LlamaConfig.from_dict({k: v for k, v in TEACHER.config.items() if k != "name"})
  want = np.asarray(attend(t_cfg, teacher, x))[..., keep]
  got = np.asarray(attend(t_cfg.replace(hidden_size=16, num_heads=2), params, x[..., keep]))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


BERT = dict(name="bert", vocab_size=50, hidden_size=32, num_layers=2, num_heads=4,
            intermediate_size=48, max_position=16)
BERT_RULES = (("regex", r"embeddings/.*", "embeddings"), ("depth", r"encoder/layer_(\d+)"),
              ("regex", r"pooler/.*", "pooler"))     # configs/minilm_l6_to_l3.py's
_rng = np.random.default_rng(2)
B_BATCH = {"input_ids": _rng.integers(1, 50, (3, 9)).astype(np.int32),
           "attention_mask": np.array([[1] * 9, [1] * 6 + [0] * 3, [1] * 4 + [0] * 5], np.int32),
           "token_type_ids": np.zeros((3, 9), np.int32)}
B_TEACHER = models.build(BERT, {})
B_PARAMS = flatten(B_TEACHER.init(jax.random.PRNGKey(3), B_BATCH))


def _bert(teacher_flat, fields, **options):
  return _prune(teacher_flat, fields, model=B_TEACHER, batch=B_BATCH, rules=BERT_RULES,
                **options)


def _hidden(model, flat):
  out = model.module.apply({"params": unflatten(flat)}, *[B_BATCH[k] for k in model.family.inputs])
  return np.asarray(out.last_hidden_state), np.asarray(out.pooled)


def test_bert_same_shape_is_the_teacher_and_zeroed_neurons_prune_exactly():
  student, params, report = _bert(B_PARAMS, {})
  for path, value in B_PARAMS.items():
    np.testing.assert_array_equal(params[path], value)
  assert report["kept"]["num_heads"] == {"layer_0": 4, "layer_1": 4}
  drop = np.arange(0, 48, 3)                 # 16 of 48 neurons: kernel columns and bias zero
  zeros = [(f"encoder/layer_{i}/intermediate/{k}", np.s_[..., drop])
           for i in range(2) for k in ("kernel", "bias")]
  zeros += [(f"encoder/layer_{i}/output/kernel", np.s_[drop]) for i in range(2)]
  teacher = _zero(B_PARAMS, zeros)
  student, params, report = _bert(teacher, {"intermediate_size": 32})
  keep = np.setdiff1d(np.arange(48), drop)
  np.testing.assert_array_equal(params["encoder/layer_1/intermediate/bias"],
                                teacher["encoder/layer_1/intermediate/bias"][keep])
  for got, want in zip(_hidden(student, params), _hidden(B_TEACHER, teacher)):
    np.testing.assert_array_equal(got, want)
  assert report["kept"]["intermediate_size"] == {"layer_0": 32, "layer_1": 32}


def test_bert_heads_are_plain_heads_and_channels_run_through_every_array():
  # Heads 1 and 2 of every layer get the largest query weights: "weight" keeps them.
  teacher = _edit(B_PARAMS, **{f"encoder/layer_{i}/attention/query/kernel":
                               (lambda q: q * np.repeat([1.0, 3.0, 3.0, 1.0], HD))
                               for i in range(2)})
  _, params, report = _bert(teacher, {"hidden_size": 16, "num_heads": 2, "num_layers": 1},
                            importance="weight", num_heads=2, layers=(1,))
  c = _channels(params, teacher, "embeddings/word_embeddings/embedding")
  assert len(set(c)) == 16
  p, t = "encoder/layer_*/attention/", "encoder/layer_1/attention/"
  got, want = lambda k: params[(p + k).replace("*", "0")], lambda k: teacher[t + k]
  heads = _cols([1, 2])
  np.testing.assert_array_equal(got("query/kernel"), want("query/kernel")[c][:, heads])
  np.testing.assert_array_equal(got("value/bias"), want("value/bias")[heads])
  np.testing.assert_array_equal(got("output/kernel"), want("output/kernel")[heads][:, c])
  np.testing.assert_array_equal(got("layer_norm/scale"), want("layer_norm/scale")[c])
  np.testing.assert_array_equal(params["pooler/kernel"], teacher["pooler/kernel"][c][:, c])
  np.testing.assert_array_equal(params["embeddings/position_embeddings/embedding"],
                                teacher["embeddings/position_embeddings/embedding"][:, c])
  assert report["teacher_layers"] == [1] and report["kept"]["hidden_size"] == 16


@pytest.mark.parametrize("fields, options, message", [
    ({"intermediate_size": 64}, {}, r"student layer_0:layer_\*/mlp/down/kernel \(64, 32\) vs "
     r"teacher layer_0:layer_\*/mlp/down/kernel \(48, 32\): the student is wider than the "
     r"teacher on axis 0 \(intermediate_size: 64 > 48\)"),
    ({"hidden_size": 16}, {}, r"pass num_heads=<the student's num_heads>"),
    ({"hidden_size": 16}, {"num_heads": 4}, r"num_heads 4 gives head_dim 4, but pruning keeps "
     r"the teacher's 8: set the student's num_heads to 2"),
    ({"hidden_size": 20, "num_heads": 2, "num_kv_heads": 1}, {"num_heads": 2},
     r"layer_0: attention width \d+ -> \d+ is not a multiple of the teacher's head_dim 8; .* "
     r"its hidden_size must be num_heads x 8"),
    ({}, {"importance": "gradient"}, r"importance 'gradient': use 'activation' or 'weight'"),
])
def test_impossible_students_are_input_errors_naming_the_field(fields, options, message):
  with pytest.raises(InputError, match=message):
    _prune(T_PARAMS, fields, **options)
