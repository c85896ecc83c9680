"""Streaming input: batches read from a random-access source (ArrayRecord files, a TFDS
``data_source``, or numpy arrays) through a grain pipeline, for data that does not fit in memory
or whose decoding and augmentation should overlap training.

Why grain's ``MapDataset``: every batch is a pure function of its index, so the batch at global
step ``s`` is a function of (seed, s, process_index, process_count) and nothing else -- a resumed
run sees exactly the batches it would have seen (as :mod:`distill_jax.data.batches` guarantees
for in-memory data). The pipeline is::

  source[:usable][process_index::process_count]    each host reads only its own records
    .shuffle(seed')                                 grain folds the epoch into the seed
    .map_with_index(example_transform)              rng = f(seed, epoch, position, process)
    .batch(batch_size // process_count, drop_remainder=True)
    .repeat()                                       index = global step
    .map_with_index(transform)                      rng = f(seed, step, process_index)

``usable`` cuts the source to a multiple of ``process_count`` so that every host has as many
records, hence as many steps per epoch. An epoch's last incomplete batch is dropped. The
per-example transform (crops of images of different sizes, before they can be stacked) sees the
record's position in this host's shuffled epoch, so a resumed run crops as the first run did.
:func:`read_rows` reads given rows in order, unshuffled, for evaluation.
"""
import json
import os
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from distill_jax.errors import InputError, MissingInput

Example = dict[str, np.ndarray]
Transform = Callable[[dict, np.random.Generator], dict]
_AUGMENT = 0x5eed          # separates the transform's random stream from other uses of seed
_EXAMPLE = 0xe8a3          # ... the per-example transform's (Stream)
_ROWS = 0x7e57             # ... and read_rows'
_CHECKED = ("seed", "batch_size", "process_count", "num_records")


# ---------------------------------------------------------------------------------- sources

def _shard_paths(prefix: str, num_shards: int) -> list[str]:
  return [f"{prefix}-{i:05d}-of-{num_shards:05d}.array_record" for i in range(num_shards)]


def _check_arrays(arrays: dict, what: str) -> int:
  """The common length of ``arrays`` (InputError naming the key that disagrees)."""
  if not arrays:
    raise InputError(f"{what}: no arrays given")
  lengths = {k: len(np.asarray(v)) for k, v in arrays.items()}
  first = next(iter(lengths))
  for key, n in lengths.items():
    if n != lengths[first]:
      raise InputError(f"{what}: array {key!r} has {n} rows but {first!r} has {lengths[first]}")
  return lengths[first]


def write_array_record(path_prefix: str, arrays: dict[str, np.ndarray],
                       num_shards: int) -> list[str]:
  """Write row ``i`` of every array as record ``i`` (a msgpack'd dict), in ``num_shards``
  contiguous files, so that :class:`ArrayRecordSource` over the returned paths reads them back
  in order. ``group_size:1``: each record is its own chunk, as random access wants."""
  from array_record.python.array_record_module import ArrayRecordWriter
  from flax.serialization import msgpack_serialize
  n = _check_arrays(arrays, f"write_array_record({path_prefix!r})")
  if not 1 <= num_shards <= max(n, 1):
    raise InputError(f"num_shards must be in [1, {n}] for {n} records, got {num_shards}")
  os.makedirs(os.path.dirname(os.path.abspath(path_prefix)), exist_ok=True)
  paths = _shard_paths(path_prefix, num_shards)
  arrays = {k: np.asarray(v) for k, v in arrays.items()}
  for path, rows in zip(paths, np.array_split(np.arange(n), num_shards)):
    writer = ArrayRecordWriter(path, "group_size:1")
    try:
      for i in rows:
        writer.write(msgpack_serialize({k: v[i] for k, v in arrays.items()}))
    finally:
      writer.close()
  return paths


class ArrayRecordSource:
  """Records of :func:`write_array_record`: ``[i]`` is example ``i`` as a dict of arrays.
  Picklable (readers reopen lazily), so grain's worker processes can decode in parallel."""

  def __init__(self, paths: Union[str, Sequence[str]]):
    import grain
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not paths:
      raise InputError("ArrayRecordSource: no paths given")
    for path in paths:
      if not os.path.isfile(path):
        raise MissingInput(f"ArrayRecordSource: file {str(path)!r} does not exist")
    self.paths = [str(p) for p in paths]
    self._records = grain.sources.ArrayRecordDataSource(self.paths)

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int) -> Example:
    from flax.serialization import msgpack_restore
    try:
      example = msgpack_restore(self._records[index])
    except Exception as e:  # msgpack raises several types for bytes that are not its format
      raise InputError(f"record {index} of {self.paths} is not a msgpack'd dict of arrays "
                       f"({type(e).__name__}: {e})") from None
    return {k: np.asarray(v) for k, v in example.items()}


class InMemorySource:
  """Numpy arrays (same number of rows) behind the source interface, so that in-memory data
  goes through the same Stream (sharding, shuffling, transforms) as data on disk."""

  def __init__(self, arrays: dict[str, np.ndarray]):
    self._n = _check_arrays(arrays, "InMemorySource")
    self.arrays = {k: np.asarray(v) for k, v in arrays.items()}

  def __len__(self) -> int:
    return self._n

  def __getitem__(self, index: int) -> Example:
    return {k: v[index] for k, v in self.arrays.items()}


class TfdsSource:
  """A TFDS ``data_source`` split with examples mapped to ``x`` (float32 in [0, 1] when the
  input is uint8) and ``y`` (int32) by the dataset's supervised keys."""

  def __init__(self, records: Any, keys: tuple[str, str], name: str):
    self._records, self.keys, self.name = records, keys, name

  @property
  def num_classes(self) -> int:
    """The label feature's class count, from the dataset's info (0 when it has none)."""
    info = getattr(self._records, "dataset_info", None)
    feature = info.features[self.keys[1]] if info is not None else None
    return int(getattr(feature, "num_classes", 0) or 0)

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int) -> Example:
    example = self._records[index]
    x = np.asarray(example[self.keys[0]])
    x = (x / 255.0).astype(np.float32) if x.dtype == np.uint8 else x.astype(np.float32)
    return {"x": x, "y": np.asarray(example[self.keys[1]], np.int32)}


def _tfds_failure(name: str, split: str, data_dir: Optional[str], download: bool,
                  error: Exception) -> InputError:
  """Why ``tfds.data_source`` failed, in words (TFDS says "file format TFRECORD is not
  supported" for a dataset that is simply not there)."""
  import tensorflow_datasets as tfds
  where = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
  reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
  try:
    prepared = tfds.builder(name, data_dir=data_dir or None).is_prepared()
  except Exception:  # unknown names raise DatasetNotFoundError with a long listing
    return MissingInput(f"TFDS dataset {name!r} is not known to tensorflow-datasets")
  if prepared:
    return InputError(f"TFDS dataset {name!r} split {split!r} in data_dir {where!r} cannot be "
                      f"read by tfds.data_source ({type(error).__name__}: {reason}); it needs "
                      "the ArrayRecord format (`tfds build --file_format=array_record`)")
  hint = ("the download failed" if download else "nothing is downloaded (download=False); "
          f"prepare it where there is network (`tfds build {name} --file_format=array_record "
          "--data_dir=DIR`) or pass download=True")
  return MissingInput(f"TFDS dataset {name!r} is not prepared in data_dir {where!r}: {hint} "
                      f"({type(error).__name__}: {reason})")


def tfds_source(name: str, split: str, data_dir: Optional[str],
                download: bool = False) -> TfdsSource:
  """``tfds.data_source(name, split)`` prepared (as ArrayRecord) in ``data_dir``. Nothing is
  downloaded unless ``download``: an unprepared dataset fails at once, naming the dataset and
  data_dir, instead of TFDS's misleading "file format TFRECORD is not supported"."""
  import tensorflow_datasets as tfds
  try:
    records = tfds.data_source(name, split=split, data_dir=data_dir or None, download=download)
  except Exception as e:  # TFDS raises ValueError, NotImplementedError, DatasetNotFoundError...
    raise _tfds_failure(name, split, data_dir, download, e) from None
  info = getattr(records, "dataset_info", None)
  keys = tuple(info.supervised_keys or ()) if info is not None else ()
  if len(keys) != 2 or not all(isinstance(k, str) for k in keys):
    raise InputError(f"TFDS dataset {name!r} has no (input, label) supervised keys: {keys}")
  return TfdsSource(records, keys, name)


# ----------------------------------------------------------------------------------- stream

def _shuffle_seed(seed: int) -> int:
  """A 32-bit seed for grain's shuffle, which uses ``seed + epoch``: hashing first keeps seed
  s's second epoch from being seed s+1's first."""
  return int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])


def _absl_flags_parsed() -> None:
  """grain 0.2.18's mp_prefetch reads an absl flag directly, which raises
  UnparsedFlagAccessError outside ``absl.app.run`` (pytest, notebooks): take the defaults."""
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


class _ApplyTransform:
  """``map_with_index`` callable (picklable for grain workers): the batch at ``step`` gets an
  rng that depends on (seed, step, process_index) only, not on who computes it or when."""

  def __init__(self, transform: Transform, seed: int, process_index: int):
    self.transform, self.seed, self.process_index = transform, seed, process_index

  def __call__(self, step: int, batch: dict) -> dict:
    rng = np.random.default_rng([self.seed, _AUGMENT, step, self.process_index])
    return self.transform(dict(batch), rng)


class _ApplyExample:
  """``map_with_index`` callable on the shuffled records (picklable for grain workers): grain
  passes ``epoch * shard + position``, so the rng is a function of (seed, epoch, position in this
  process's shuffled epoch, process_index) -- the same whichever step the stream resumed at."""

  def __init__(self, transform: Transform, seed: int, process_index: int, shard: int):
    self.transform, self.seed, self.process_index, self.shard = (transform, seed, process_index,
                                                                 shard)

  def __call__(self, index: int, example: dict) -> dict:
    epoch, position = divmod(index, self.shard)
    rng = np.random.default_rng([self.seed, _EXAMPLE, epoch, position, self.process_index])
    return self.transform(dict(example), rng)


def _stack(examples: Sequence[dict], what: str) -> dict[str, np.ndarray]:
  """``{key: np.stack(...)}`` over ``examples`` (the batch_fn of Stream and read_rows), with an
  InputError naming the key and both shapes where numpy would only say that shapes differ."""
  keys = sorted(examples[0])
  for i, example in enumerate(examples):
    if sorted(example) != keys:
      raise InputError(f"{what}: example {i} has keys {sorted(example)} but example 0 has {keys}")
  out = {}
  for key in keys:
    values = [np.asarray(e[key]) for e in examples]
    for i, v in enumerate(values):
      if v.shape != values[0].shape:
        raise InputError(f"{what}: key {key!r} has shape {values[0].shape} in example 0 but "
                         f"{v.shape} in example {i}, so they cannot be stacked; add a "
                         "per-example transform that gives them one shape, such as "
                         "center_crop_example or inception_crop_example (example_transform)")
    out[key] = np.stack(values)
  return out


def _stack_batch(examples: Sequence[dict]) -> dict[str, np.ndarray]:
  return _stack(examples, "Stream batch")


def read_rows(source: Any, idx: np.ndarray, example_transform: Optional[Transform] = None,
              seed: int = 0) -> dict[str, np.ndarray]:
  """The examples ``source[i]`` for ``i`` in ``idx``, stacked per key in the order of ``idx``:
  for evaluation, which wants every row once, unshuffled and unsharded. The transform's rng is
  a function of (seed, i), so a row is transformed alike whichever chunk or order reads it."""
  idx = np.asarray(idx)
  if idx.ndim != 1 or not len(idx) or not np.issubdtype(idx.dtype, np.integer):
    raise InputError(f"read_rows: idx must be a non-empty 1-D integer array, got shape "
                     f"{idx.shape} dtype {idx.dtype}")
  n = len(source)
  if idx.min() < 0 or idx.max() >= n:
    raise InputError(f"read_rows: idx must be in [0, {n}), got values in "
                     f"[{idx.min()}, {idx.max()}]")
  if example_transform is not None and not callable(example_transform):
    raise InputError(f"read_rows: example_transform must be callable, got "
                     f"{type(example_transform).__name__}")
  examples = []
  for i in idx.tolist():
    example = dict(source[i])
    if example_transform is not None:
      example = example_transform(example, np.random.default_rng([seed, _ROWS, i]))
    examples.append(example)
  return _stack(examples, "read_rows")


class Stream:
  """This host's batches of ``source``: ``batch(step)`` is the local batch at global step
  ``step`` (module docstring). Steps asked in order come from a prefetching grain iterator
  (``num_workers > 0``: worker processes decode and transform); any other step re-positions it.
  ``example_transform(example, rng)`` maps each record before batching (the crops of images of
  different sizes), ``transform(batch, rng)`` each batch. Close it (or use ``with``) to stop the
  workers."""

  def __init__(self, source: Any, batch_size: int, seed: int, process_index: int = 0,
               process_count: int = 1, transform: Optional[Transform] = None,
               num_workers: int = 0, prefetch: int = 4,
               example_transform: Optional[Transform] = None):
    import grain
    if process_count < 1 or not 0 <= process_index < process_count:
      raise InputError(f"process_index {process_index} is not in [0, {process_count})")
    if batch_size < 1 or batch_size % process_count:
      raise InputError(f"batch_size {batch_size} does not split over {process_count} processes")
    if seed < 0:
      raise InputError(f"seed must be >= 0, got {seed}")
    for name, fn in (("transform", transform), ("example_transform", example_transform)):
      if fn is not None and not callable(fn):
        raise InputError(f"Stream {name} must be callable, got {type(fn).__name__}")
    if num_workers < 0 or prefetch < 1:
      raise InputError(f"num_workers must be >= 0 and prefetch >= 1, got {num_workers}, "
                       f"{prefetch}")
    self.num_records = len(source)
    self.local_batch_size = batch_size // process_count
    shard = self.num_records // process_count
    if shard < self.local_batch_size:
      raise InputError(f"{self.num_records} records over {process_count} processes leave "
                       f"{shard} per process, fewer than the local batch of "
                       f"{self.local_batch_size}")
    self.seed, self.batch_size, self.num_workers = seed, batch_size, num_workers
    self.process_index, self.process_count = process_index, process_count
    self.steps_per_epoch = shard // self.local_batch_size
    ds = grain.MapDataset.source(source)[:shard * process_count]
    ds = ds[process_index::process_count].shuffle(seed=_shuffle_seed(seed))
    if example_transform is not None:
      ds = ds.map_with_index(_ApplyExample(example_transform, seed, process_index, shard))
    ds = ds.batch(self.local_batch_size, drop_remainder=True, batch_fn=_stack_batch).repeat()
    if transform is not None:
      ds = ds.map_with_index(_ApplyTransform(transform, seed, process_index))
    self._dataset = ds
    self._read = grain.ReadOptions(num_threads=min(2, prefetch), prefetch_buffer_size=prefetch)
    self._iterator, self._start, self._next = None, 0, None

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """The local batch at global step ``step`` (InputError for a negative step)."""
    if step < 0:
      raise InputError(f"step must be >= 0, got {step}")
    if self._iterator is None or step != self._next:
      self._position(step)
    batch = next(self._iterator)
    self._next = step + 1
    return batch

  def _position(self, step: int) -> None:
    """Point the iterator at ``step``: in-process by grain's ``set_state``; with workers, a
    fresh pipeline over ``dataset[step:]`` (grain cannot re-index a multi-worker iterator)."""
    import grain
    if self.num_workers == 0:
      if self._iterator is None:
        self._iterator = iter(self._dataset.to_iter_dataset(self._read))
      self._iterator.set_state({"next_index": step})
      self._start = 0
      return
    self.close()
    _absl_flags_parsed()
    options = grain.MultiprocessingOptions(num_workers=self.num_workers,
                                           per_worker_buffer_size=2)
    self._iterator = iter(self._dataset[step:].to_iter_dataset(self._read).mp_prefetch(options))
    self._start = step

  def state(self, step: int) -> dict:
    """JSON-able description of the stream about to read ``step`` (for a checkpoint's
    metadata); ``grain`` is the live iterator's own state when it is positioned there."""
    epoch, index = divmod(step, self.steps_per_epoch)
    out = {"seed": self.seed, "step": step, "batch_size": self.batch_size,
           "local_batch_size": self.local_batch_size, "process_index": self.process_index,
           "process_count": self.process_count, "num_records": self.num_records,
           "epoch": epoch, "index_in_epoch": index}
    if self._iterator is not None and self._next == step:
      try:
        grain_state = {"start": self._start, "state": self._iterator.get_state()}
        json.dumps(grain_state)
        out["grain"] = grain_state
      except (TypeError, ValueError, NotImplementedError):
        pass               # not JSON-able: ``step`` alone re-positions the stream
    return out

  def check_state(self, state: dict) -> None:
    """InputError naming the first key whose saved value differs from this stream's (another
    seed, batch size, process count or dataset size would not continue the same batches)."""
    if not isinstance(state, dict):
      raise InputError(f"stream state must be a dict, got {type(state).__name__}")
    mine = self.state(0)
    for key in _CHECKED:
      if key not in state:
        raise InputError(f"stream state lacks key {key!r} (has {sorted(state)})")
      if state[key] != mine[key]:
        raise InputError(f"stream state {key!r} was {state[key]!r} when saved but is "
                         f"{mine[key]!r} now: the resumed run would read other batches")

  def close(self) -> None:
    """Stop the worker processes (if any); a later ``batch`` starts new ones."""
    if self._iterator is not None and hasattr(self._iterator, "close"):
      self._iterator.close()
    self._iterator, self._next = None, None

  def __enter__(self) -> "Stream":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
