"""The error policy: an :class:`InputError` (bad config, file, rule or shape; its message names
it) is the user's to fix and is printed as one ``FATAL:`` line; any other exception is a bug
and keeps its traceback.
"""


class InputError(ValueError):
  """Bad input (config value, file, rule, shape); the message says what and where."""


class MissingInput(InputError, FileNotFoundError):
  """A file, directory, package or dataset that the config names does not exist."""


class UnknownName(InputError, KeyError):
  """A registry name (model, loss term, task, strategy, ...) that nothing registered."""

  def __str__(self) -> str:            # KeyError would print the message quoted
    return str(self.args[0]) if self.args else ""
