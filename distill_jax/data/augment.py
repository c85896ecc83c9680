"""Host-side numpy augmentation of a batch of images ``x`` (N, H, W, C) float32, run by the
input pipeline (:class:`distill_jax.data.streaming.Stream`, possibly in grain worker processes)
so that it overlaps the accelerator's step. Each augmentation is a picklable
``fn(batch, rng) -> batch`` (``rng``: a ``np.random.Generator`` the Stream derives from
(seed, step, process)); :func:`compose` chains them and :func:`from_config` builds them by name.

Datasets whose images differ in size (ImageNet) cannot be batched before they are cropped: the
``*_example`` transforms take one example ``x`` (H, W, C) of any size, as the Stream's
``example_transform`` (rng from (seed, epoch, record position)) or :func:`~distill_jax.data.
streaming.read_rows`'s; :func:`example_from_config` builds them by name.

mixup and cutmix follow :func:`distill_jax.train.mixup`'s convention: each example is mixed
with its neighbour ``np.roll(x, 1, axis=0)`` and ``batch["mixup_lambda"]`` (the weight of the
example's own label) tells the label terms to mix ``y`` with ``roll(y, 1)``. The roll is over
this host's batch: exact for one process (with several, the label terms roll the global batch).
"""
import functools
from typing import Callable, Optional, Sequence

import numpy as np

from distill_jax.errors import InputError, UnknownName

Augment = Callable[[dict, np.random.Generator], dict]


def _images(batch: dict, key: str) -> np.ndarray:
  if key not in batch:
    raise InputError(f"augmentation needs batch key {key!r}; the batch has {sorted(batch)}")
  x = np.asarray(batch[key])
  if x.ndim != 4:
    raise InputError(f"augmentation needs batch[{key!r}] of shape (N, H, W, C), got {x.shape}")
  return x


def _compose(fns: tuple, batch: dict, rng: np.random.Generator) -> dict:
  for fn in fns:
    batch = fn(batch, rng)
  return batch


def compose(*fns: Augment) -> Augment:
  """Apply ``fns`` in order, all drawing from the one rng."""
  return functools.partial(_compose, tuple(fns))


def _random_crop(pad: int, key: str, batch: dict, rng: np.random.Generator) -> dict:
  x = _images(batch, key)
  n, h, w, _ = x.shape
  padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  dy = rng.integers(0, 2 * pad + 1, size=n)
  dx = rng.integers(0, 2 * pad + 1, size=n)
  rows = (dy[:, None] + np.arange(h))[:, :, None]
  cols = (dx[:, None] + np.arange(w))[:, None, :]
  return dict(batch, **{key: padded[np.arange(n)[:, None, None], rows, cols]})


def random_crop(pad: int = 4, key: str = "x") -> Augment:
  """Zero-pad each side by ``pad``, then crop back to H x W at a random offset per example
  (the CIFAR recipe): a shift of up to ``pad`` pixels with zeros shifted in."""
  if pad < 0:
    raise InputError(f"random_crop pad must be >= 0, got {pad}")
  return functools.partial(_random_crop, int(pad), key)


def _flip(key: str, batch: dict, rng: np.random.Generator) -> dict:
  x = _images(batch, key)
  flipped = rng.random(len(x)) < 0.5
  return dict(batch, **{key: np.where(flipped[:, None, None, None], x[:, :, ::-1], x)})


def flip(key: str = "x") -> Augment:
  """Mirror each example left-right with probability 1/2."""
  return functools.partial(_flip, key)


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """(h, w, C) -> (height, width, C), bilinear with half-pixel centres (as ``jax.image.resize``
  without antialiasing); weights sum to one, so a constant image stays constant."""
  def axis(out: int, size: int):
    pos = np.clip((np.arange(out) + 0.5) * size / out - 0.5, 0, size - 1)
    lo = np.floor(pos).astype(np.int64)
    return lo, np.minimum(lo + 1, size - 1), (pos - lo).astype(np.float32)
  y0, y1, wy = axis(height, image.shape[0])
  x0, x1, wx = axis(width, image.shape[1])
  rows = image[y0] * (1 - wy)[:, None, None] + image[y1] * wy[:, None, None]
  return rows[:, x0] * (1 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]


def crop_box(h: int, w: int, rng: np.random.Generator, area: tuple, ratio: tuple):
  """(top, left, height, width) of a random crop covering ``area`` (fractions) of the image
  with aspect ``ratio`` (w/h, log-uniform); after 10 misses, the whole image (torchvision's
  RandomResizedCrop)."""
  log_ratio = np.log(ratio)
  for _ in range(10):
    target = h * w * rng.uniform(*area)
    aspect = np.exp(rng.uniform(*log_ratio))
    cw, ch = int(round(np.sqrt(target * aspect))), int(round(np.sqrt(target / aspect)))
    if 0 < cw <= w and 0 < ch <= h:
      return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
  return 0, 0, h, w


def _inception_crop(size: int, area: tuple, ratio: tuple, key: str, batch: dict,
                    rng: np.random.Generator) -> dict:
  x = _images(batch, key)
  out = np.empty((len(x), size, size, x.shape[-1]), np.float32)
  for i, image in enumerate(x):
    top, left, ch, cw = crop_box(x.shape[1], x.shape[2], rng, area, ratio)
    out[i] = resize_bilinear(image[top:top + ch, left:left + cw], size, size)
  return dict(batch, **{key: out})


def inception_crop(size: int, area: tuple = (0.08, 1.0), ratio: tuple = (3 / 4, 4 / 3),
                   key: str = "x") -> Augment:
  """A random crop of ``area`` of the image and aspect ``ratio``, resized to size x size:
  the ImageNet training crop (Szegedy et al. 2015)."""
  return functools.partial(_inception_crop, *_inception_args("inception_crop", size, area, ratio),
                           key)


def _inception_args(name: str, size: int, area: tuple, ratio: tuple) -> tuple:
  area, ratio = tuple(area), tuple(ratio)
  if (size < 1 or len(area) != 2 or len(ratio) != 2 or not 0 < area[0] <= area[1] <= 1
      or not 0 < ratio[0] <= ratio[1]):
    raise InputError(f"{name}: size {size} must be >= 1, area {area} within (0, 1] "
                     f"and ratio {ratio} positive, each (low, high)")
  return int(size), area, ratio


def _mix(batch: dict, key: str, mixed: np.ndarray, lam: float) -> dict:
  """The mixed batch; ``y_mix``: the labels of the neighbours mixed in. The label terms read
  it rather than rolling the global batch, whose order differs from this host's (each host
  mixes within its own share)."""
  # One lambda per row (all equal): batch arrays are split over devices and hosts by rows.
  out = dict(batch, **{key: mixed.astype(np.float32)},
             mixup_lambda=np.full(len(mixed), lam, np.float32))
  if "y" in batch:
    out["y_mix"] = np.roll(batch["y"], 1, axis=0)
  return out


def _mixup(alpha: float, key: str, batch: dict, rng: np.random.Generator) -> dict:
  x = _images(batch, key)
  lam = rng.beta(alpha, alpha)
  return _mix(batch, key, lam * x + (1.0 - lam) * np.roll(x, 1, axis=0), lam)


def _cutmix(alpha: float, key: str, batch: dict, rng: np.random.Generator) -> dict:
  x = _images(batch, key)
  _, h, w, _ = x.shape
  cut = np.sqrt(1.0 - rng.beta(alpha, alpha))
  cy, cx = rng.integers(0, h), rng.integers(0, w)
  y0, y1 = np.clip([cy - int(h * cut) // 2, cy + int(h * cut) // 2], 0, h)
  x0, x1 = np.clip([cx - int(w * cut) // 2, cx + int(w * cut) // 2], 0, w)
  mixed = x.copy()
  mixed[:, y0:y1, x0:x1] = np.roll(x, 1, axis=0)[:, y0:y1, x0:x1]
  return _mix(batch, key, mixed, 1.0 - (y1 - y0) * (x1 - x0) / (h * w))


def _check_alpha(name: str, alpha: float) -> float:
  if not alpha > 0:
    raise InputError(f"{name} alpha must be > 0, got {alpha}")
  return float(alpha)


def mixup(alpha: float, key: str = "x") -> Augment:
  """``lam * x + (1 - lam) * roll(x)``, one ``lam ~ Beta(alpha, alpha)`` per batch."""
  return functools.partial(_mixup, _check_alpha("mixup", alpha), key)


def cutmix(alpha: float, key: str = "x") -> Augment:
  """Paste one box of the neighbour into each example (Yun et al. 2019); the box's area is
  ``1 - lam`` for ``lam ~ Beta(alpha, alpha)`` before clipping at the border, and
  ``mixup_lambda`` is the area actually kept."""
  return functools.partial(_cutmix, _check_alpha("cutmix", alpha), key)


def _number(name: str, arg: str, cast: Callable):
  try:
    return cast(arg)
  except ValueError:
    raise InputError(f"augmentation {name!r}: {arg!r} is not a {cast.__name__}") from None


_BUILDERS = {   # name -> (builder, argument type, default argument; None: required)
    "crop": (random_crop, int, 4), "flip": (flip, None, None), "mixup": (mixup, float, None),
    "cutmix": (cutmix, float, None), "inception_crop": (inception_crop, int, None),
}


def _build(names: Sequence[str], builders: dict, what: str) -> list:
  """The functions ``names`` (``name`` or ``name:arg``) ask ``builders`` for, in order."""
  fns = []
  for spec in names:
    name, _, arg = str(spec).partition(":")
    if name not in builders:
      raise UnknownName(f"unknown {what} {name!r} in {list(names)}; known: {sorted(builders)}")
    build, cast, default = builders[name]
    if cast is None:
      if arg:
        raise InputError(f"{what} {name!r} takes no argument, got {spec!r}")
      fns.append(build())
      continue
    if not arg and default is None:
      raise InputError(f"{what} {name!r} needs an argument: {name}:<{cast.__name__}>")
    fns.append(build(_number(name, arg, cast) if arg else default))
  return fns


def _split(names: Sequence[str]) -> list:
  if isinstance(names, str):
    return [n.strip() for n in names.split(",") if n.strip()]
  return list(names)


def from_config(names: Sequence[str]) -> Optional[Augment]:
  """The composition of ``names`` in order, each ``name`` or ``name:arg`` (``crop[:pad]``,
  ``flip``, ``mixup:alpha``, ``cutmix:alpha``, ``inception_crop:size``); None for no names (no
  transform). At most one of mixup/cutmix: both would set ``mixup_lambda`` and the labels
  would not follow. A string is read as comma-separated names (a config's ``"crop,flip"``)."""
  names = _split(names)
  if not names:
    return None
  fns = _build(names, _BUILDERS, "augmentation")
  mixing = [s for s in names if str(s).partition(":")[0] in ("mixup", "cutmix")]
  if len(mixing) > 1:
    raise InputError(f"augmentations {mixing}: use at most one of mixup/cutmix per batch")
  return compose(*fns)


# ------------------------------------------------------------------ per-example (H, W, C)

def _image(example: dict, key: str) -> np.ndarray:
  if key not in example:
    raise InputError(f"example transform needs key {key!r}; the example has {sorted(example)}")
  x = np.asarray(example[key])
  if x.ndim != 3:
    raise InputError(f"example transform needs example[{key!r}] of shape (H, W, C), got "
                     f"{x.shape}")
  return x


def _inception_crop_example(size: int, area: tuple, ratio: tuple, key: str, example: dict,
                            rng: np.random.Generator) -> dict:
  x = _image(example, key)
  top, left, ch, cw = crop_box(x.shape[0], x.shape[1], rng, area, ratio)
  out = resize_bilinear(x[top:top + ch, left:left + cw], size, size)
  return dict(example, **{key: out.astype(np.float32, copy=False)})


def inception_crop_example(size: int, area: tuple = (0.08, 1.0),
                           ratio: tuple = (3 / 4, 4 / 3), key: str = "x") -> Augment:
  """:func:`inception_crop` of one image of any size: the ImageNet training crop, applied
  before batching because ImageNet's images differ in size. Output float32 (size, size, C)."""
  return functools.partial(_inception_crop_example,
                           *_inception_args("inception_crop_example", size, area, ratio), key)


def _center_crop_example(size: int, resize: int, key: str, example: dict,
                         rng: np.random.Generator) -> dict:
  del rng                      # deterministic: evaluation must not depend on the seed
  x = _image(example, key)
  h, w = x.shape[:2]
  if h <= w:
    nh, nw = resize, int(round(w * resize / h))
  else:
    nh, nw = int(round(h * resize / w)), resize
  if (nh, nw) != (h, w):
    x = resize_bilinear(x, nh, nw)
  top, left = (nh - size) // 2, (nw - size) // 2
  return dict(example, **{key: x[top:top + size, left:left + size].astype(np.float32)})


def center_crop_example(size: int, resize: Optional[int] = None, key: str = "x") -> Augment:
  """Resize the shorter side to ``resize`` (default ``round(size / 0.875)``: 256 for 224),
  keeping the aspect, then take the central size x size crop: the standard ImageNet evaluation
  preprocessing, so that evaluation matches the published protocol. Ignores the rng."""
  resize = int(round(size / 0.875)) if resize is None else resize
  if size < 1 or resize < size:
    raise InputError(f"center_crop_example: size {size} must be >= 1 and resize {resize} >= "
                     "size")
  return functools.partial(_center_crop_example, int(size), int(resize), key)


def _flip_example(key: str, example: dict, rng: np.random.Generator) -> dict:
  x = _image(example, key)
  return dict(example, **{key: x[:, ::-1] if rng.random() < 0.5 else x})


def flip_example(key: str = "x") -> Augment:
  """Mirror one image left-right with probability 1/2 (one draw per call, taken either way,
  so the transforms after it see the same rng state whatever the coin said)."""
  return functools.partial(_flip_example, key)


_EXAMPLE_BUILDERS = {
    "inception_crop": (inception_crop_example, int, None),
    "center_crop": (center_crop_example, int, None), "flip": (flip_example, None, None),
}


def example_from_config(names: Sequence[str]) -> Optional[Augment]:
  """The composition of per-example transforms ``names`` in order (``inception_crop:size``,
  ``center_crop:size``, ``flip``; a string is comma-separated), for ``Stream``'s
  ``example_transform`` or :func:`~distill_jax.data.streaming.read_rows`; None for no names."""
  names = _split(names)
  return compose(*_build(names, _EXAMPLE_BUILDERS, "example transform")) if names else None
