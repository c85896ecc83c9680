"""ResNets for CIFAR and ImageNet (He et al., 2016) and wide ResNets (Zagoruyko & Komodakis,
2016), in Flax linen, with the layouts the distillation literature uses (CRD/RepDistiller's
CIFAR models, torchvision's ImageNet ones), so that published parameter counts and recipes
carry over.

Blocks are ``stage_{i}/block_{j}`` (both indices in the names, so partition rules select
blocks within a stage); a block's batch-norm statistics sit beside its weights
(``stage_1/block_0/bn_1/{scale, bias, mean, var}``: ``models.Family.state``).
"""
import re
from typing import Iterable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from distill_jax.errors import InputError

# Partition rules for the family: the stem, every block by (stage, block) in model order
# (layer_0 ... layer_{n-1}, the statistics with their block), the final norm and head.
PARTITION_RULES = (("regex", r"stem/.*", "stem"), ("depth", r"stage_(\d+)/block_(\d+)"),
                   ("regex", r"(norm|head)/.*", "head"))

BLOCKS = ("basic", "bottleneck", "preact")
STEMS = ("cifar", "imagenet")

# Named presets (``{"name": "resnet", "preset": "resnet20"}``). CIFAR ResNets use 1x1
# projection shortcuts (option B) as RepDistiller does; "x4" widens the stages 4x and the stem
# 2x; wrn_d_k: d = 6n + 4 layers, stage widths 16k, 32k, 64k, pre-activation blocks.
RESNETS = {
    "resnet20": dict(stage_sizes=(3, 3, 3), widths=(16, 32, 64)),
    "resnet32": dict(stage_sizes=(5, 5, 5), widths=(16, 32, 64)),
    "resnet56": dict(stage_sizes=(9, 9, 9), widths=(16, 32, 64)),
    "resnet8x4": dict(stage_sizes=(1, 1, 1), widths=(64, 128, 256), stem_width=32),
    "resnet32x4": dict(stage_sizes=(5, 5, 5), widths=(64, 128, 256), stem_width=32),
    "wrn_16_2": dict(stage_sizes=(2, 2, 2), widths=(16, 32, 64), width_multiplier=2,
                     block="preact"),
    "wrn_40_2": dict(stage_sizes=(6, 6, 6), widths=(16, 32, 64), width_multiplier=2,
                     block="preact"),
    "resnet18": dict(stage_sizes=(2, 2, 2, 2), widths=(64, 128, 256, 512), stem="imagenet"),
    "resnet34": dict(stage_sizes=(3, 4, 6, 3), widths=(64, 128, 256, 512), stem="imagenet"),
    "resnet50": dict(stage_sizes=(3, 4, 6, 3), widths=(64, 128, 256, 512), stem="imagenet",
                     block="bottleneck"),
}


FIELDS = ("stage_sizes", "widths", "block", "stem", "stem_width", "width_multiplier")


def preset_fields(preset: str) -> dict:
  """Every architecture field of a preset (defaults filled in), for configs that list them so
  that any one can be overridden (``--config.student.model.widths='(8,16,32)'``)."""
  if preset not in RESNETS:
    raise InputError(f"resnet preset {preset!r} is not one of {sorted(RESNETS)}")
  return {f: RESNETS[preset].get(f, getattr(ResNet, f)) for f in FIELDS}


def images(x: jnp.ndarray, model: str) -> jnp.ndarray:
  """(N, H, W, C) images; (N, H, W) ones get a channel axis."""
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4:
    raise InputError(f"{model}: batch key 'x' has shape {tuple(x.shape)}; expected images "
                     "(N, H, W[, C])")
  return x


def conv(features: int, size: int, stride: int, name: str) -> nn.Conv:
  """A bias-free conv padded by size // 2 on each side (PyTorch's layout, not "SAME", whose
  stride-2 padding is asymmetric) with He's fan-out initialisation (torchvision's)."""
  return nn.Conv(features, (size, size), (stride, stride), padding=[(size // 2, size // 2)] * 2,
                 use_bias=False, kernel_init=nn.initializers.variance_scaling(2.0, "fan_out",
                                                                              "normal"),
                 name=name)


def batch_norm(train: bool, name: str) -> nn.BatchNorm:
  """PyTorch's defaults (momentum 0.1 there is 0.9 here: the weight of the old statistic).
  Flax updates the running variance with the biased batch variance."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


class Shortcut(nn.Module):
  """The projection on a block's residual path where its shape changes: a 1x1 conv (with a
  batch norm except in pre-activation blocks, as in the wide ResNets)."""
  features: int
  stride: int
  norm: bool = True

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = conv(self.features, 1, self.stride, "conv")(x)
    return batch_norm(train, "bn")(x) if self.norm else x


class Block(nn.Module):
  """One residual block: ``basic`` (two 3x3 convs), ``bottleneck`` (1x1, 3x3 with the stride
  (torchvision's v1.5), 1x1 to 4x ``width``) or ``preact`` (BN-ReLU before each 3x3 conv; the
  shortcut reads the pre-activated input, as WRN's)."""
  width: int
  stride: int
  kind: str

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    out_features = self.width * (4 if self.kind == "bottleneck" else 1)
    project = self.stride != 1 or x.shape[-1] != out_features

    def residual(h):   # x itself, or a projection of h where the shape changes
      return (Shortcut(out_features, self.stride, self.kind != "preact", name="shortcut")(
          h, train) if project else x)

    if self.kind == "preact":
      pre = nn.relu(batch_norm(train, "bn_0")(x))
      y = conv(self.width, 3, self.stride, "conv_0")(pre)
      y = conv(self.width, 3, 1, "conv_1")(nn.relu(batch_norm(train, "bn_1")(y)))
      return y + residual(pre)
    # (width, kernel size, stride) of each conv; batch norm after each, ReLU between them.
    convs = ([(self.width, 3, self.stride), (self.width, 3, 1)] if self.kind == "basic" else
             [(self.width, 1, 1), (self.width, 3, self.stride), (out_features, 1, 1)])
    y = x
    for k, (features, size, stride) in enumerate(convs):
      y = batch_norm(train, f"bn_{k}")(conv(features, size, stride, f"conv_{k}")(y))
      y = nn.relu(y) if k < len(convs) - 1 else y
    return nn.relu(y + residual(x))


class Stage(nn.Module):
  """``size`` blocks ``block_{j}`` of one width; the first may downsample (``stride``)."""
  width: int
  size: int
  stride: int
  kind: str

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    for j in range(self.size):
      x = Block(self.width, self.stride if j == 0 else 1, self.kind, name=f"block_{j}")(x, train)
    return x


class Stem(nn.Module):
  """``cifar``: a 3x3 conv, stride 1; ``imagenet``: a 7x7 conv, stride 2, then a 3x3 max-pool,
  stride 2. A batch norm and ReLU after the conv, except before pre-activation blocks (they
  normalise their own input)."""
  features: int
  kind: str
  norm: bool = True

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    imagenet = self.kind == "imagenet"
    x = conv(self.features, 7 if imagenet else 3, 2 if imagenet else 1, "conv")(x)
    if self.norm:
      x = nn.relu(batch_norm(train, "bn")(x))
    return nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1))) if imagenet else x


class ResNet(nn.Module):
  """A ResNet over (N, H, W[, C]) images: ``stem``, ``stage_{i}/block_{j}``, (``norm`` for
  pre-activation blocks,) global average pooling, the Dense ``head``. Defaults: resnet20.

  ``widths``: each stage's block width (a bottleneck block outputs 4x), times
  ``width_multiplier`` (WRN's k); ``stem_width``: the stem's channels (0: ``widths[0]``, not
  multiplied). Stages after the first halve the resolution.
  """
  num_classes: int
  stage_sizes: Sequence[int] = (3, 3, 3)
  widths: Sequence[int] = (16, 32, 64)
  block: str = "basic"
  stem: str = "cifar"
  stem_width: int = 0
  width_multiplier: int = 1

  def __post_init__(self):
    if self.block not in BLOCKS or self.stem not in STEMS:
      raise InputError(f"ResNet: block {self.block!r} / stem {self.stem!r}: use a block of "
                       f"{BLOCKS} and a stem of {STEMS}")
    if len(self.stage_sizes) != len(self.widths) or min(self.stage_sizes, default=0) < 1:
      raise InputError(f"ResNet: stage_sizes {tuple(self.stage_sizes)} and widths "
                       f"{tuple(self.widths)} must be equally long, at least one block each")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = images(x, "ResNet")
    preact = self.block == "preact"
    x = Stem(self.stem_width or self.widths[0], self.stem, not preact, name="stem")(x, train)
    for i, (size, width) in enumerate(zip(self.stage_sizes, self.widths)):
      x = Stage(width * self.width_multiplier, size, 1 if i == 0 else 2, self.block,
                name=f"stage_{i}")(x, train)
    if preact:
      x = nn.relu(batch_norm(train, "norm")(x))
    return nn.Dense(self.num_classes, name="head")(jnp.mean(x, axis=(1, 2)))


_BLOCK = re.compile(r"stage_(\d+)/block_(\d+)/(.*)")


def blocks(paths: Iterable[str]) -> dict[tuple[int, int], set[str]]:
  """``{(stage, block): names under it}`` of a ResNet's parameter paths
  (``stage_1/block_0/bn_1/scale`` -> ``(1, 0): {"bn_1/scale", ...}``)."""
  out: dict = {}
  for path in paths:
    m = _BLOCK.fullmatch(path)
    if m:
      out.setdefault((int(m.group(1)), int(m.group(2))), set()).add(m.group(3))
  return out


def channel_sets(paths: Iterable[str]) -> dict[str, tuple]:
  """For each parameter path of a ResNet (statistics included), the channel
  set of each axis: channels that must be kept or dropped together when the network is made
  narrower. ``"stem"`` is the stem's output; a stage's residual stream is ``"stage_{i}"`` from
  the block whose projection shortcut starts it (blocks without one read and write the stream
  they are given, so the stem's set runs on where the first block has no shortcut); a block's
  inner channels are ``"stage_{i}/block_{j}/{k}"``. None: an axis never narrowed (kernel
  sizes, the image's colour channels, the classes). Pre-activation ResNets (a top-level
  ``norm``) read a block's ``bn_0`` on its input."""
  paths = set(paths)
  preact = any(p.startswith("norm/") for p in paths)
  sets = {}
  current = "stem"

  def put(prefix: str, module: str, inputs, outputs) -> None:
    for name in ("kernel", "scale", "bias", "mean", "var"):
      path = f"{prefix}{module}/{name}"
      if path in paths:
        sets[path] = ((None, None, inputs, outputs) if name == "kernel" else (outputs,))

  sets.update({p: (None, None, None, "stem") if p.endswith("kernel") else ("stem",)
               for p in paths if p.startswith("stem/")})
  for (i, j), names in sorted(blocks(paths).items()):
    prefix = f"stage_{i}/block_{j}/"
    inner = [f"{prefix}{k}" for k in range(3)]
    out = f"stage_{i}" if any(n.startswith("shortcut/") for n in names) else current
    convs = sorted({n.split("/")[0] for n in names if n.startswith("conv_")})
    chain = [current] + inner[:len(convs) - 1] + [out]    # conv k reads chain[k], writes k+1
    for k, module in enumerate(convs):
      put(prefix, module, chain[k], chain[k + 1])
      # A post-activation block's bn_k follows conv_k; a pre-activation one's precedes it.
      put(prefix, f"bn_{k}", None, chain[k] if preact else chain[k + 1])
    put(prefix, "shortcut/conv", current, out)
    put(prefix, "shortcut/bn", None, out)
    current = out
  put("", "norm", None, current)
  if "head/kernel" in paths:
    sets["head/kernel"], sets["head/bias"] = (current, None), (None,)
  unknown = sorted(paths - set(sets))
  if unknown:
    raise InputError(f"channel_sets: parameter(s) {unknown[:5]} are not part of a ResNet "
                     "laid out as models/resnet.py builds it")
  return sets
