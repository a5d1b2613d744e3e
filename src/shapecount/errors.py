"""User-facing errors: each becomes one line `error: <where>: <what> (<fix>)` in the CLI, with exit code 2 for a
UserError (bad input) and 1 for a TrainingError (a run that fails)."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (data, options, files). Never shown with a traceback."""

    def __init__(self, where: str, what: str, fix: str = "") -> None:
        self.where, self.what, self.fix = str(where), what, fix
        super().__init__(str(self))

    def __str__(self) -> str:
        msg = f"{self.where}: {self.what}"
        return f"{msg} ({self.fix})" if self.fix else msg


class DataError(UserError):
    """The dataset (labels.csv, images, zip, URL) is missing or malformed."""


class TrainingError(RuntimeError):
    """Training could not go on (a non-finite loss); the message says where the last good state is."""


class NonFiniteOutputError(TrainingError):
    """A model produced NaN or Inf for some inputs; such outputs are reported, never turned into metrics."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's pre-emption, `kill`): stops like Ctrl-C, at the same safe points (a run keeps its
    last complete epoch)."""


def raise_terminated(signum, frame) -> None:
    """A SIGTERM handler: raise Terminated where the process is."""
    raise Terminated()
