"""Data sources, registered by name (``data.source``); none reads the network unless the config
allows a TFDS download.
"""
import os
import zipfile
from typing import Any, Callable, TypeVar

import numpy as np

from distill_jax.errors import InputError, MissingInput
from distill_jax.data.dataset import Dataset, seeded_split
from distill_jax.registry import Registry

SOURCES: Registry = Registry("data source")
T = TypeVar("T")


def load(data_config) -> Dataset:
  """Build the Dataset that ``data_config.source`` names."""
  return SOURCES.get(data_config.source)(data_config)


def _as_float(x: np.ndarray) -> np.ndarray:
  """uint8 images to [0, 1]; anything else is taken as already scaled."""
  x = np.asarray(x)
  return (x / 255.0).astype(np.float32) if x.dtype == np.uint8 else x.astype(np.float32)


@SOURCES.register("digits")
def digits(data_config) -> Dataset:
  """scikit-learn's bundled 1,797 8x8 digits (real, offline), pixels scaled to [0, 1]."""
  from sklearn.datasets import load_digits
  raw = load_digits()
  x = (raw.data / 16.0).astype(np.float32)
  y = raw.target.astype(np.int32)
  return Dataset("digits", *seeded_split(x, y, data_config.test_fraction, data_config.split_seed),
                 num_classes=10)


def read_npz_file(path: str, what: str, read: Callable[[Any], T]) -> T:
  """``read(f)`` of the ``.npz`` at ``data.path`` (``what`` names it in errors), opened with
  ``allow_pickle=False``; a missing file or one that cannot be read is an error naming it."""
  if not path or not os.path.isfile(path):
    raise MissingInput(f"data.path: {what} {path!r} does not exist")
  try:
    with np.load(path, allow_pickle=False) as f:
      return read(f)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    if isinstance(e, InputError):
      raise
    raise InputError(f"{what} {path!r} cannot be read ({type(e).__name__}: {e}); is it "
                     "truncated, or not an .npz?") from None


@SOURCES.register("npz")
def npz(data_config) -> Dataset:
  """Any ``.npz`` with ``x`` (N, ...) and integer ``y`` (N,), split by a seeded fraction."""
  path = data_config.path

  def read(f):
    missing = [k for k in ("x", "y") if k not in f.files]
    if missing:
      raise InputError(f"npz file {path!r} lacks array(s) {missing}; it has {f.files}. "
                       "Expected 'x' of shape (N, ...) and 'y' of shape (N,) with int labels")
    return f["x"], f["y"]
  x, y = read_npz_file(path, "npz file", read)
  if y.ndim != 1 or len(y) != len(x):
    raise InputError(f"npz file {path!r}: 'y' has shape {y.shape}, expected ({len(x)},) "
                     f"to match 'x' of shape {x.shape}")
  if not np.issubdtype(y.dtype, np.integer):
    raise InputError(f"npz file {path!r}: 'y' has dtype {y.dtype}, expected integer labels")
  if len(x) < 2:
    raise InputError(f"npz file {path!r} holds {len(x)} examples; need at least 2 to split")
  num_classes = int(data_config.get("num_classes") or (y.max() + 1))
  return Dataset(os.path.basename(path), *seeded_split(_as_float(x), y.astype(np.int32),
                                                       data_config.test_fraction,
                                                       data_config.split_seed), num_classes)


def online(host: str = "storage.googleapis.com", timeout: float = 3.0) -> bool:
  """Whether TFDS's download mirror answers; offline, tfds would retry for minutes."""
  import socket
  try:
    socket.create_connection((host, 443), timeout=timeout).close()
    return True
  except OSError:
    return False


def tfds_builder(name: str, data_dir, may_download: bool):
  """A TFDS builder whose data is prepared in ``data_dir``; unprepared, it is downloaded only
  when ``may_download`` and the mirror answers (a dead network is not retried for minutes)."""
  import tensorflow_datasets as tfds
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # unknown names raise DatasetNotFoundError with a long listing
    raise MissingInput(f"TFDS dataset {name!r} is not known to tensorflow-datasets "
                                  f"({type(e).__name__})") from None
  if builder.is_prepared():
    return builder
  where = f"data_dir {data_dir or tfds.core.constants.DATA_DIR!r} (looked in {builder.data_dir})"
  if not may_download:
    raise MissingInput(
        f"TFDS dataset {name!r} is not prepared in {where} and nothing is downloaded. Prepare "
        f"it where there is network (`tfds build {name} --data_dir=DIR`), then set "
        "data.data_dir=DIR (or data.download=True on a machine with network)")
  if not online():
    raise MissingInput(f"TFDS dataset {name!r} is not prepared in {where} and this "
                                  "machine is offline, so it cannot be downloaded")
  try:
    builder.download_and_prepare()
  except Exception as e:
    raise MissingInput(f"TFDS dataset {name!r} could not be downloaded into "
                                  f"data_dir {builder.data_dir!r}: {e}") from None
  return builder


@SOURCES.register("tfds")
def tfds_source(data_config) -> Dataset:
  """A TFDS dataset by name (``mnist``, ``cifar10``...) prepared in ``data_dir``; downloaded
  only with ``data.download=True`` (``tfds.load`` retries a dead network for minutes, so a
  dataset missing from ``data_dir`` fails at once instead)."""
  import tensorflow_datasets as tfds
  name = data_config.name
  builder = tfds_builder(name, data_config.data_dir or None, data_config.download)
  keys = builder.info.supervised_keys
  if not keys:
    raise MissingInput(f"TFDS dataset {name!r} has no supervised (input, label) keys")
  arrays = {}
  for split in ("train", "test"):
    data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, as_supervised=True))
    arrays[split] = (_as_float(data[0]), np.asarray(data[1], np.int32))
  num_classes = builder.info.features[keys[1]].num_classes
  return Dataset(name, *arrays["train"], *arrays["test"], num_classes=num_classes)


@SOURCES.register("mnist1d")
def mnist1d(data_config) -> Dataset:
  """MNIST-1D (Greydanus, 2020): 4,000 train / 1,000 test sequences of 40, 10 classes, made
  offline by ``make_dataset`` with the package's defaults (``get_dataset`` would try a download
  and write a pickle into the working directory)."""
  try:
    from mnist1d.data import get_dataset_args, make_dataset
  except ImportError:
    raise MissingInput("data.source='mnist1d' needs the package `mnist1d` "
                      "(pip install mnist1d; it is in requirements.txt)") from None
  raw = make_dataset(get_dataset_args())
  return Dataset("mnist1d", raw["x"].astype(np.float32), raw["y"].astype(np.int32),
                 raw["x_test"].astype(np.float32), raw["y_test"].astype(np.int32), num_classes=10)
