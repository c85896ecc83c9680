"""ResNets and ViTs: every preset's logits, the published parameter counts, batch-norm statistics
carried through training (moved by momentum, used at inference, untouched by weight decay),
partition and layer selection by block (statistics included), and a KD step between ResNets."""
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import losses, recombine, train
from distill_jax.errors import InputError
from distill_jax.models import STATE_UPDATES, resnet, vit
from distill_jax.partition import partition
from distill_jax.recombine.strategies import stage_layers
from distill_jax.paths import flatten, unflatten
from tests.helpers import build

KEY = jax.random.PRNGKey(0)
TINY = dict(stage_sizes=(1, 1), widths=(4, 8))          # a 2-stage CIFAR ResNet
# One preset of each kind of block and stem (every preset's count: test_parameter_counts...).
PRESETS = [("resnet", p) for p in ("resnet20", "wrn_16_2", "resnet8x4", "resnet18", "resnet50")
           ] + [("vit", "vit_ti16")]
RULES = {"resnet": resnet.PARTITION_RULES, "vit": vit.PARTITION_RULES}


def _images(n, size, seed=0):
  return np.random.default_rng(seed).normal(size=(n, size, size, 3)).astype(np.float32)


def _tiny(num_classes=3, **fields):
  return build(num_classes, name="resnet", **{**TINY, **fields})


def _size(family, preset):
  """Tiny images: 8x8 for CIFAR ResNets, 32x32 for ImageNet ones and ViTs (4 patches)."""
  return 8 if family == "resnet" and resnet.RESNETS[preset].get("stem") != "imagenet" else 32


@functools.lru_cache(maxsize=None)
def _abstract(family, preset):
  """A preset's model, its abstract params (state merged in) and an abstract batch of 2."""
  model = build(7, name=family, preset=preset)
  size = _size(family, preset)
  batch = {"x": jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)}
  return model, jax.eval_shape(model.init, KEY, batch), batch


@pytest.mark.parametrize("family,preset", PRESETS)
def test_every_preset_gives_logits_and_train_mode_updates_exactly_its_statistics(family,
                                                                                 preset):
  model, params, batch = _abstract(family, preset)
  out = jax.eval_shape(lambda p, b: model.apply(p, b)[0], params, batch)
  assert out["logits"].shape == (2, 7) and STATE_UPDATES not in out
  trained = jax.eval_shape(lambda p, b: model.apply(p, b, train=True)[0], params, batch)
  stats = {k: v.shape for k, v in flatten(params).items() if k.endswith(("/mean", "/var"))}
  assert trained["logits"].shape == (2, 7)
  assert {k: v.shape for k, v in trained.get(STATE_UPDATES, {}).items()} == stats
  assert bool(stats) == (family == "resnet")


# (family, preset, classes, image size, exact count, published millions): torchvision's and
# timm's counts; CIFAR ones as He et al. (10 classes) and CRD/RepDistiller (100 classes).
COUNTS = [("resnet", "resnet20", 10, 32, 272_474, 0.27),
          ("resnet", "resnet56", 10, 32, 855_770, 0.86),
          ("resnet", "resnet8x4", 100, 32, 1_233_540, 1.23),
          ("resnet", "resnet32x4", 100, 32, 7_433_860, 7.43),
          ("resnet", "wrn_16_2", 100, 32, 703_284, 0.70),
          ("resnet", "wrn_40_2", 100, 32, 2_255_156, 2.26),
          ("resnet", "resnet18", 1000, 32, 11_689_512, 11.69),
          ("resnet", "resnet34", 1000, 32, 21_797_672, 21.80),
          ("resnet", "resnet50", 1000, 32, 25_557_032, 25.56),
          ("vit", "vit_ti16", 1000, 224, 5_717_416, 5.72),
          ("vit", "vit_s16", 1000, 224, 22_050_664, 22.05),
          ("vit", "vit_b16", 1000, 224, 86_567_656, 86.57)]


@pytest.mark.parametrize("family,preset,classes,size,count,published", COUNTS)
def test_parameter_counts_are_the_published_ones(family, preset, classes, size, count,
                                                 published):
  model = build(classes, name=family, preset=preset)
  shapes = jax.eval_shape(model.module.init, KEY,
                          jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))   # not the stats
  assert (n, round(n / 1e6, 2)) == (count, published)


LEAF = {"resnet": r"(stem/(conv|bn)|stage_\d+/block_\d+/((conv|bn)_\d|shortcut/(conv|bn))|norm"
                  r"|head)/(kernel|bias|scale|mean|var)",
        "vit": r"embed/(patch/(kernel|bias)|cls|position)|block_\d+/(norm_[01]/(scale|bias)|"
               r"attention/(query|key|value|out)/(kernel|bias)|mlp/dense_[01]/(kernel|bias))|"
               r"(norm|head)/(kernel|bias|scale)"}


@pytest.mark.parametrize("family,preset", PRESETS)
def test_paths_are_named_by_index_and_the_rules_put_each_block_in_its_layer_group(family,
                                                                                  preset):
  _, params, _ = _abstract(family, preset)
  flat = flatten(params)
  assert all(re.fullmatch(LEAF[family], k) for k in flat), [
      k for k in flat if not re.fullmatch(LEAF[family], k)]
  parts = partition(params, RULES[family])
  assert sorted(c.path for c in parts.claims) == sorted(flat)        # each leaf, once
  if family == "resnet":
    sizes = resnet.RESNETS[preset]["stage_sizes"]
    offsets = np.cumsum((0,) + tuple(sizes))
    where = lambda m: f"layer_{offsets[int(m[1])] + int(m[2])}"
    pattern, first = r"stage_(\d+)/block_(\d+)/", "stem"
  else:
    sizes = (build(7, name="vit", preset=preset).module.num_layers,)
    where, pattern, first = lambda m: f"layer_{m[1]}", r"block_(\d+)/", "embed"
  assert sorted(parts.names) == sorted([first, "head"] + [f"layer_{i}"
                                                         for i in range(sum(sizes))])
  for c in parts.claims:            # a block's leaves, its statistics included, in its group
    m = re.match(pattern, c.path)
    assert c.group == (where(m) if m else first if c.path.startswith(first) else "head"), c
  if preset == "resnet20":
    claim = next(c for c in parts.claims if c.path == "stage_1/block_0/bn_1/mean")
    assert (claim.group, claim.key) == ("layer_3", "stage_*/block_*/bn_1/mean")


def _init(model, batch, seed, stats=False):
  """Params for ``model`` drawn with numpy (kernels ~ N(0, 1/fan_in), unit scales, zero biases;
  running statistics fresh (0 and 1) or, with ``stats``, distinct), shaped by the model's
  abstract init: no initialiser to compile (on a busy 2-core CPU, compiling a tiny ResNet's
  took ~40 s)."""
  rng = np.random.default_rng(seed)

  def draw(path, shape):
    leaf = path.rsplit("/", 1)[-1]
    if stats and leaf in ("mean", "var"):
      return rng.normal(size=shape) if leaf == "mean" else rng.uniform(0.5, 2.0, size=shape)
    if leaf in ("scale", "var", "bias", "mean", "cls"):
      return np.full(shape, 1.0 if leaf in ("scale", "var") else 0.0)
    return rng.normal(size=shape) / np.sqrt(np.prod(shape[:-1]))    # kernels, positions
  shapes = flatten(jax.eval_shape(model.init, KEY, batch))
  return unflatten({k: jnp.asarray(draw(k, v.shape), jnp.float32) for k, v in shapes.items()})


MODEL = _tiny()       # one model object: the jitted helpers below compile once per shape


@functools.partial(jax.jit, static_argnums=(0, 3))
def _forward(model, params, x, train_mode):
  """Logits, state updates and the stem conv's and batch norm's outputs."""
  out, feats = model.apply(params, {"x": x}, train=train_mode, capture=True)
  return out["logits"], out.get(STATE_UPDATES, {}), feats["stem/conv"], feats["stem/bn"]


def _ce_step(model, **kw):
  return jax.jit(train.make_train_step(model, losses.bind((("ce", 1.0, {}),), "terms"), **kw))


BATCH = {"x": _images(4, 8), "y": np.array([0, 1, 2, 0], np.int32)}


@pytest.mark.parametrize("micro_batches", [1, 2])
def test_a_train_step_moves_the_statistics_by_momentum_and_nothing_else(micro_batches):
  params = _init(MODEL, BATCH, 1, stats=True)
  tx = train.make_optimizer(1e-2, 10, weight_decay=0.5)
  state, metrics = _ce_step(MODEL, micro_batches=micro_batches)(
      train.TrainState.create(params, tx, KEY), BATCH)
  old, new = flatten(params), flatten(state.params)
  # The stem conv's output on the (last micro-)batch, by hand: flax's momentum 0.9 and the
  # biased batch variance.
  _, updates, h, _ = _forward(MODEL, params, BATCH["x"][4 - 4 // micro_batches:], True)
  h = np.asarray(h, np.float64)
  np.testing.assert_allclose(new["stem/bn/mean"],
                             0.9 * old["stem/bn/mean"] + 0.1 * h.mean((0, 1, 2)), rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(new["stem/bn/var"],
                             0.9 * old["stem/bn/var"] + 0.1 * h.var((0, 1, 2)), rtol=1e-5)
  # Every statistic is the model's own train-mode update (no decay, no Adam step on it)...
  assert set(updates) == {k for k in old if k.endswith(("/mean", "/var"))}
  for k, v in updates.items():
    np.testing.assert_allclose(new[k], v, rtol=1e-6, atol=1e-7)
  assert not np.allclose(new["stem/bn/scale"], old["stem/bn/scale"])   # ...weights move
  # ... and the statistics get no gradient: the norm is the weights' alone.
  if micro_batches == 1:
    loss = lambda p: losses.cross_entropy(MODEL.apply(p, BATCH, train=True)[0]["logits"],
                                          BATCH["y"])
    grads = flatten(jax.jit(jax.grad(loss))(params))
    assert all(not np.any(grads[k]) for k in updates)
    weights = [v for k, v in grads.items() if k not in updates]
    assert float(metrics["grad_norm"]) == pytest.approx(
        float(jnp.sqrt(sum(jnp.sum(g ** 2) for g in weights))), rel=1e-5)


def test_a_frozen_block_keeps_its_statistics():
  params = _init(MODEL, BATCH, 1)
  tx = train.make_optimizer(1e-2, 10, frozen=(r"stage_0/.*",))
  new = flatten(_ce_step(MODEL, frozen=(r"stage_0/.*",))(
      train.TrainState.create(params, tx, KEY), BATCH)[0].params)
  old = flatten(params)
  assert all(np.array_equal(new[k], old[k]) for k in old if k.startswith("stage_0/"))
  assert not np.allclose(new["stage_1/block_0/bn_0/mean"], old["stage_1/block_0/bn_0/mean"])


def test_inference_normalises_with_the_running_statistics():
  x = BATCH["x"]
  params = _init(MODEL, BATCH, 2, stats=True)
  logits, _, h, bn = _forward(MODEL, params, x, False)
  p = flatten(params)
  expected = ((np.asarray(h) - p["stem/bn/mean"]) / np.sqrt(p["stem/bn/var"] + 1e-5)
              * p["stem/bn/scale"] + p["stem/bn/bias"])
  np.testing.assert_allclose(bn, expected, rtol=1e-4, atol=1e-5)
  # The first example's logits do not depend on the rest of the batch, except in train mode.
  others = np.concatenate([x[:1], _images(3, 8, seed=1)])
  np.testing.assert_allclose(_forward(MODEL, params, others, False)[0][0], logits[0],
                             rtol=1e-5, atol=1e-6)
  assert not np.allclose(_forward(MODEL, params, others, True)[0][0],
                         _forward(MODEL, params, x, True)[0][0])


def test_presets_expand_and_bad_inputs_are_input_errors():
  model = build(10, name="resnet", preset="wrn_16_2", stage_sizes=(1, 1, 1))
  assert model.config == {"name": "resnet", "stage_sizes": [1, 1, 1], "widths": [16, 32, 64],
                          "block": "preact", "stem": "cifar", "stem_width": 0,
                          "width_multiplier": 2}
  with pytest.raises(InputError, match="preset 'resnet19' is not one of"):
    build(10, name="resnet", preset="resnet19")
  with pytest.raises(InputError, match="block 'dense'"):
    _tiny(block="dense")
  with pytest.raises(InputError, match=r"shape \(2, 8\)"):
    MODEL.init(KEY, {"x": np.zeros((2, 8), np.float32)})
  weights_only = unflatten({k: v for k, v in flatten(_init(MODEL, BATCH, 0)).items()
                            if not k.endswith(("/mean", "/var"))})
  with pytest.raises(InputError, match="lack state leaves.*stage_0/block_0/bn_0/mean"):
    MODEL.apply(weights_only, BATCH)
  with pytest.raises(InputError, match=r"images of shape \(1, 12, 12, 3\).*8x8"):
    build(3, name="vit", patch_size=8, hidden_size=8, num_layers=1, num_heads=2,
          mlp_dim=16).init(KEY, {"x": _images(1, 12)})


def test_select_keeps_blocks_within_each_stage_with_their_statistics():
  assert stage_layers((9, 9, 9), (3, 3, 3)) == [0, 4, 8, 9, 13, 17, 18, 22, 26]
  teacher, student = _tiny(stage_sizes=(3, 2)), _tiny(stage_sizes=(2, 1))
  t_params = _init(teacher, BATCH, 3, stats=True)
  layers = stage_layers((3, 2), (2, 1))
  assert layers == [0, 2, 3]
  new, report = recombine.recombine(t_params, _init(student, BATCH, 4), strategy="select",
                                    rules=resnet.PARTITION_RULES, layers=layers)
  assert report["new_params"] == 0
  source = {"stage_0/block_1/": "stage_0/block_2/"}     # the others are the teacher's own
  t = flatten(t_params)
  for k, v in flatten(new).items():
    src = next((t_b + k[len(s_b):] for s_b, t_b in source.items() if k.startswith(s_b)), k)
    np.testing.assert_array_equal(v, t[src], err_msg=k)


def test_select_keeps_vit_blocks():
  fields = dict(patch_size=4, hidden_size=8, num_heads=2, mlp_dim=16)
  teacher = build(3, name="vit", num_layers=4, **fields)
  student = build(3, name="vit", num_layers=2, **fields)
  t_params = _init(teacher, BATCH, 5)
  new, report = recombine.recombine(t_params, _init(student, BATCH, 6), strategy="select",
                                    rules=vit.PARTITION_RULES)
  assert report["teacher_layers"] == [0, 3] and report["new_params"] == 0
  t = flatten(t_params)
  for k, v in flatten(new).items():
    np.testing.assert_array_equal(v, t[k.replace("block_1/", "block_3/")], err_msg=k)


def test_kd_from_a_resnet_teacher_lowers_the_loss_of_a_smaller_resnet():
  teacher = _tiny(stage_sizes=(2, 2))
  params = _init(MODEL, BATCH, 7)
  state = train.TrainState.create(params, train.make_optimizer(2e-2, 12), KEY)
  step = jax.jit(train.make_train_step(
      MODEL, losses.bind((("kd", 1.0, {"temperature": 4.0}),), "terms"), teacher))
  t_params = _init(teacher, BATCH, 8, stats=True)
  seen = []
  for _ in range(12):
    state, metrics = step(state, BATCH, t_params)
    seen.append(float(metrics["kd"]))
  assert np.mean(seen[-3:]) < 0.5 * seen[0], seen
  assert not np.allclose(flatten(state.params)["stem/bn/mean"], flatten(params)["stem/bn/mean"])


# Teacher and student fields for the width test of each kind of block: the student narrows
# the stem (unless it feeds the first stage's stream), every stream and every block's inside.
NARROWER = {"basic": (dict(widths=(6, 8)), dict(widths=(4, 5))),
            "preact": (dict(widths=(4, 6), block="preact", stem_width=3),
                       dict(widths=(3, 4), block="preact", stem_width=2)),
            "bottleneck": (dict(widths=(2, 3), block="bottleneck", stem_width=6),
                           dict(widths=(1, 2), block="bottleneck", stem_width=5))}


@pytest.mark.parametrize("block", sorted(NARROWER))
def test_channels_cut_a_narrower_resnet_computing_what_the_teacher_computes(block):
  # Teacher channels outside random kept subsets are zeroed on every array of their set
  # (weights, norms, the head's rows): the teacher then computes with the kept channels only,
  # so the student cut to them must give the teacher's logits, and both importances must find
  # exactly those channels (zeroed norms have |gamma| = 0 and silent outputs).
  t_fields, s_fields = NARROWER[block]
  teacher, student = _tiny(**t_fields), _tiny(**s_fields)
  t_params = flatten(_init(teacher, BATCH, 11, stats=True))
  s_shapes = {k: np.shape(v) for k, v in flatten(_init(student, BATCH, 12)).items()}
  t_sets = resnet.channel_sets(t_params)
  s_sets = resnet.channel_sets(s_shapes)
  rng = np.random.default_rng(0)
  keep, t_size = {}, {}
  for path, sets in s_sets.items():   # same depth: a set's name is the teacher's too
    for axis, name in enumerate(sets):
      if name is not None:
        t_size[name] = t_params[path].shape[axis]
        keep.setdefault(name, np.sort(rng.permutation(t_size[name])[:s_shapes[path][axis]]))
  assert any(len(keep[s]) < t_size[s] for s in keep)
  zeroed = {}
  for path, value in t_params.items():
    x = np.array(value)
    for axis, name in enumerate(t_sets[path]):
      if name is not None:
        drop = np.setdiff1d(np.arange(x.shape[axis]), keep[name])
        idx = [slice(None)] * x.ndim
        idx[axis] = drop
        if path.endswith(("/mean", "/var")):     # statistics stay valid (var > 0)
          continue
        x[tuple(idx)] = 0.0
    zeroed[path] = jnp.asarray(x)
  t_tree = unflatten(zeroed)
  want = teacher.apply(t_tree, BATCH)[0]["logits"]
  context = recombine.Context(teacher=teacher, teacher_params=t_tree, batch=BATCH)
  for importance in ("weight", "activation"):
    new, report = recombine.recombine(t_tree, unflatten({k: jnp.zeros(s) for k, s in
                                                         s_shapes.items()}),
                                      strategy="channels", rules=resnet.PARTITION_RULES,
                                      context=context, importance=importance)
    assert report["new_params"] == 0, importance
    got = student.apply(new, BATCH)[0]["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=importance)
    for path, value in flatten(new).items():    # each array is the teacher's, sliced by hand
      x = np.asarray(zeroed[path])
      for axis, name in enumerate(s_sets[path]):
        x = np.take(x, keep[name], axis=axis) if name is not None else x
      np.testing.assert_array_equal(value, x, err_msg=f"{importance} {path}")


def test_channels_also_select_blocks_and_refuse_a_wider_or_rewired_student():
  teacher = _tiny(stage_sizes=(3, 2), widths=(6, 8))
  t_params = _init(teacher, BATCH, 13, stats=True)
  student = _tiny(stage_sizes=(2, 1), widths=(4, 8))
  new, report = recombine.recombine(t_params, _init(student, BATCH, 14), strategy="channels",
                                    rules=resnet.PARTITION_RULES)
  assert report["teacher_layers"] == [0, 2, 3] and report["new_params"] == 0
  t = flatten(t_params)
  # stage 1 keeps its width: its blocks are the teacher's, except the input rows of the first
  # conv, which read the narrowed stage-0 stream (the stem's set: the first block has no
  # shortcut); stage 0's second block is the teacher's third
  scale = sum(np.abs(np.asarray(t[f"{m}/scale"])) for m in
              ("stem/bn", "stage_0/block_0/bn_1", "stage_0/block_2/bn_1"))
  stream = np.sort(np.argsort(-scale, kind="stable")[:4])
  flat = flatten(new)
  np.testing.assert_array_equal(flat["stage_1/block_0/conv_0/kernel"],
                                np.asarray(t["stage_1/block_0/conv_0/kernel"])[:, :, stream])
  np.testing.assert_array_equal(flat["stage_1/block_0/bn_1/mean"], t["stage_1/block_0/bn_1/mean"])
  np.testing.assert_array_equal(flat["stem/bn/var"], np.asarray(t["stem/bn/var"])[stream])
  inner = np.sort(np.argsort(-np.abs(np.asarray(t["stage_0/block_2/bn_0/scale"])),
                             kind="stable")[:4])
  np.testing.assert_array_equal(flat["stage_0/block_1/conv_1/kernel"],
                                np.asarray(t["stage_0/block_2/conv_1/kernel"])[:, :, inner][
                                    ..., stream])
  with pytest.raises(InputError, match=r"wider than the teacher's.*\(10, 8\)"):
    recombine.recombine(t_params, _init(_tiny(stage_sizes=(2, 1), widths=(4, 10)), BATCH, 15),
                        strategy="channels", rules=resnet.PARTITION_RULES)
  # a stem narrower than the first stage gives the student a shortcut the teacher lacks
  with pytest.raises(InputError, match="student stage_0/block_0/shortcut/.*no teacher array.*projection shortcut"):
    recombine.recombine(t_params, _init(_tiny(stage_sizes=(2, 1), widths=(4, 8), stem_width=2),
                                        BATCH, 16),
                        strategy="channels", rules=resnet.PARTITION_RULES)
  with pytest.raises(InputError, match="importance 'norms'"):
    recombine.recombine(t_params, _init(student, BATCH, 14), strategy="channels",
                        rules=resnet.PARTITION_RULES, importance="norms")


def test_prune_narrows_a_vits_mlps_and_the_student_computes_what_the_teacher_does():
  # The teacher's MLP neurons outside a random kept set are silenced (their dense_0 columns
  # and bias and dense_1 rows zeroed: gelu(0) = 0), so a student cut to the kept neurons must
  # give the teacher's logits, and both importances must find those neurons.
  fields = dict(patch_size=4, hidden_size=8, num_heads=2, num_layers=2)
  teacher = build(3, name="vit", mlp_dim=16, **fields)
  student = build(3, name="vit", mlp_dim=6, **fields)
  batch = {"x": _images(4, 8)}
  t_flat = {k: np.array(v) for k, v in flatten(_init(teacher, batch, 21)).items()}
  rng = np.random.default_rng(1)
  keep = {}
  for i in range(2):
    keep[i] = np.sort(rng.permutation(16)[:6])
    drop = np.setdiff1d(np.arange(16), keep[i])
    t_flat[f"block_{i}/mlp/dense_0/kernel"][:, drop] = 0.0
    t_flat[f"block_{i}/mlp/dense_0/bias"][drop] = 0.0
    t_flat[f"block_{i}/mlp/dense_1/kernel"][drop] = 0.0
  t_params = unflatten({k: jnp.asarray(v) for k, v in t_flat.items()})
  want = teacher.apply(t_params, batch)[0]["logits"]
  context = recombine.Context(teacher, t_params, batch, student=student)
  for importance in ("weight", "activation"):
    new, report = recombine.recombine(t_params, _init(student, batch, 22), strategy="prune",
                                      rules=vit.PARTITION_RULES, context=context,
                                      importance=importance)
    assert report["new_params"] == 0
    np.testing.assert_allclose(student.apply(new, batch)[0]["logits"], want, rtol=1e-5,
                               atol=1e-6, err_msg=importance)
    flat = flatten(new)
    for i in range(2):
      np.testing.assert_array_equal(flat[f"block_{i}/mlp/dense_1/kernel"],
                                    t_flat[f"block_{i}/mlp/dense_1/kernel"][keep[i]])
