"""The error policy: an :class:`InputError` is the user's to fix; anything else is a bug.

Every check of a config, a file, a rule or a shape raises an ``InputError`` (or a subclass)
whose message names the offending key, path or shape; the command line prints it as one
``FATAL:`` line and exits with status 2. Any other exception keeps its traceback, on the
console and in ``WORKDIR/log.txt``: a programming error is never disguised as bad input.
"""


class InputError(ValueError):
  """Bad input (config value, file, rule, shape); the message says what and where."""


class MissingInput(InputError, FileNotFoundError):
  """A file, directory, package or dataset that the config names does not exist."""


class UnknownName(InputError, KeyError):
  """A registry name (model, loss term, task, strategy, ...) that nothing registered."""

  def __str__(self) -> str:            # KeyError would print the message quoted
    return str(self.args[0]) if self.args else ""
