"""Data sources and deterministic batching."""
import time

import ml_collections
import numpy as np
import pytest

from distill_jax import data as data_lib
from distill_jax.errors import MissingInput


def _config(**kw):
  base = dict(source="digits", name="", path="", data_dir="", download=False, test_fraction=0.2,
              split_seed=0, num_classes=0)
  return ml_collections.ConfigDict(dict(base, **kw))


def test_digits_is_the_real_bundled_set_split_by_seed():
  ds = data_lib.load(_config())
  assert len(ds.x_train) + len(ds.x_test) == 1797 and len(ds.x_test) == 359
  assert ds.input_shape == (64,) and ds.num_classes == 10
  assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
  again = data_lib.load(_config())
  np.testing.assert_array_equal(ds.x_test, again.x_test)
  other = data_lib.load(_config(split_seed=1))
  assert not np.array_equal(ds.y_test, other.y_test)


def test_batches_depend_only_on_seed_and_step_and_reshuffle_each_epoch():
  n = 1437
  per_epoch = data_lib.steps_per_epoch(n, 100)
  a = data_lib.batch_indices(n, 100, seed=3, step=5)
  np.testing.assert_array_equal(a, data_lib.batch_indices(n, 100, seed=3, step=5))
  assert not np.array_equal(a, data_lib.batch_indices(n, 100, seed=4, step=5))
  # one epoch visits each training example at most once
  seen = np.concatenate([data_lib.batch_indices(n, 100, 3, s) for s in range(per_epoch)])
  assert len(np.unique(seen)) == len(seen) == per_epoch * 100
  # the next epoch is a different order
  first = data_lib.batch_indices(n, 100, 3, 0)
  assert not np.array_equal(first, data_lib.batch_indices(n, 100, 3, per_epoch))
  # two processes each read a contiguous half of the global batch
  halves = [data_lib.local_indices(n, 100, 3, 5, p, 2) for p in (0, 1)]
  np.testing.assert_array_equal(np.concatenate(halves), a)


def test_length_grouped_batches_are_homogeneous_random_and_cover_the_epoch():
  n, b, group = 1000, 10, 5
  lengths = np.random.default_rng(0).integers(1, 60, n)
  per_epoch = data_lib.steps_per_epoch(n, b)
  batches = [data_lib.batch_indices(n, b, 3, s, lengths, group) for s in range(per_epoch)]
  seen = np.concatenate(batches)
  # the same examples as the plain epoch (whole batches of its permutation), each once
  np.testing.assert_array_equal(np.sort(seen), np.sort(np.concatenate(
      [data_lib.batch_indices(n, b, 3, s) for s in range(per_epoch)])))
  # each run of `group` batches of the permutation, sorted by length, cut into batches
  order = np.random.default_rng([3, 0]).permutation(n)
  run = order[:group * b]
  expected = set(tuple(sorted(run[np.argsort(-lengths[run], kind="stable")][i:i + b]))
                 for i in range(0, group * b, b))
  assert expected <= {tuple(sorted(x)) for x in batches}
  # padding: the longest row per batch is far below random batches' on average
  longest = np.mean([lengths[x].max() for x in batches])
  plain = np.mean([lengths[data_lib.batch_indices(n, b, 3, s)].max() for s in range(per_epoch)])
  assert longest < 0.8 * plain, (longest, plain)
  # the batch order does not follow length: the first 20 batches are not sorted
  firsts = [lengths[x].max() for x in batches[:20]]
  assert firsts != sorted(firsts, reverse=True) and firsts != sorted(firsts)
  # deterministic in (seed, step); another seed, another order; two hosts split a batch
  np.testing.assert_array_equal(batches[7], data_lib.batch_indices(n, b, 3, 7, lengths, group))
  assert not np.array_equal(batches[7], data_lib.batch_indices(n, b, 4, 7, lengths, group))
  halves = [data_lib.local_indices(n, b, 3, 7, p, 2, lengths, group) for p in (0, 1)]
  np.testing.assert_array_equal(np.concatenate(halves), batches[7])
  with pytest.raises(data_lib.batches.InputError, match=r"one length per example \(1000\), got 999"):
    data_lib.batch_indices(n, b, 3, 0, lengths[:-1], group)


def test_npz_source_loads_and_splits(tmp_path):
  path = tmp_path / "d.npz"
  x = np.random.default_rng(0).random((50, 4, 4)).astype(np.float32)
  np.savez(path, x=x, y=np.arange(50) % 3)
  ds = data_lib.load(_config(source="npz", path=str(path), test_fraction=0.1))
  assert ds.num_classes == 3 and ds.input_shape == (4, 4)
  assert len(ds.x_test) == 5 and len(ds.x_train) == 45


@pytest.mark.parametrize("arrays,match", [
    ({"x": np.zeros((4, 2))}, r"lacks array\(s\) \['y'\]"),
    ({"inputs": np.zeros((4, 2)), "y": np.zeros(4, int)}, r"lacks array\(s\) \['x'\]"),
    ({"x": np.zeros((4, 2)), "y": np.zeros(3, int)}, r"'y' has shape \(3,\), expected \(4,\)"),
    ({"x": np.zeros((4, 2)), "y": np.zeros(4)}, "expected integer labels"),
])
def test_npz_source_rejects_bad_files_naming_the_problem(tmp_path, arrays, match):
  path = tmp_path / "bad.npz"
  np.savez(path, **arrays)
  with pytest.raises(ValueError, match=match):
    data_lib.load(_config(source="npz", path=str(path)))


def test_npz_missing_file_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="missing.npz"):
    data_lib.load(_config(source="npz", path=str(tmp_path / "missing.npz")))


def test_labels_out_of_range_are_rejected(tmp_path):
  path = tmp_path / "d.npz"
  np.savez(path, x=np.zeros((10, 2)), y=np.arange(10))
  with pytest.raises(ValueError, match=r"outside \[0, 4\]"):
    data_lib.load(_config(source="npz", path=str(path), num_classes=5))


@pytest.mark.parametrize("download", [False, True])
def test_offline_tfds_request_fails_fast_naming_dataset_and_data_dir(tmp_path, download):
  start = time.time()
  with pytest.raises(MissingInput) as err:
    data_lib.load(_config(source="tfds", name="mnist", data_dir=str(tmp_path), download=download))
  assert time.time() - start < 30
  assert "'mnist'" in str(err.value) and str(tmp_path) in str(err.value)


def test_a_prepared_tfds_dataset_loads_through_the_real_path(tmp_path):
  """Build a tiny image dataset offline with TFDS itself, then read it by name."""
  import tensorflow_datasets as tfds

  class DistillJaxToyImages(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self,
          features=tfds.features.FeaturesDict({
              "image": tfds.features.Image(shape=(6, 6, 1)),
              "label": tfds.features.ClassLabel(num_classes=3)}),
          supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples(12, 0), "test": self._generate_examples(6, 1)}

    def _generate_examples(self, n, seed):
      rng = np.random.default_rng(seed)
      for i in range(n):
        yield i, {"image": rng.integers(0, 256, (6, 6, 1), dtype=np.uint8), "label": i % 3}

  DistillJaxToyImages(data_dir=str(tmp_path)).download_and_prepare()
  ds = data_lib.load(_config(source="tfds", name="distill_jax_toy_images", data_dir=str(tmp_path)))
  assert ds.x_train.shape == (12, 6, 6, 1) and ds.x_test.shape == (6, 6, 6, 1)
  assert ds.x_train.dtype == np.float32 and 0.0 <= ds.x_train.min() <= ds.x_train.max() <= 1.0
  assert ds.num_classes == 3 and sorted(set(ds.y_train.tolist())) == [0, 1, 2]


def test_mnist1d_source_gives_the_published_4000_1000_split():
  ds = data_lib.load(ml_collections.ConfigDict({"source": "mnist1d"}))
  assert (ds.x_train.shape, ds.x_test.shape) == ((4000, 40), (1000, 40))
  assert ds.x_train.dtype == np.float32 and ds.num_classes == 10
  assert sorted(set(ds.y_train.tolist())) == list(range(10))


def test_example_lengths_count_real_tokens_and_name_what_is_missing():
  from distill_jax.data.feed import example_lengths
  mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
  np.testing.assert_array_equal(example_lengths({"attention_mask": mask}), [2, 4, 1])
  with pytest.raises(data_lib.batches.InputError,
                     match=r"needs token rows with an attention_mask; .* \['x', 'y'\]"):
    example_lengths({"x": np.zeros((3, 2)), "y": np.zeros(3, int)})
