"""The pipeline's exception tree.

Every error the pipeline raises on purpose derives from :class:`PipelineError`,
grouped by what the caller should do with it:

* :class:`DeadLetterError` -- the input is bad; send it to the dead-letter
  topic with its ``reason`` and keep going.
* :class:`RetryableError` -- something outside is briefly unavailable (a
  broker, ClickHouse); back off and try again, commit nothing meanwhile.
* :class:`FatalError` -- the process cannot do its job (bad settings, a
  missing tool, a port already taken); stop with a clear message.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Root of every error the pipeline raises deliberately."""


class DeadLetterError(PipelineError):
    """Bad input: the record goes to the dead-letter topic with ``reason``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class InvalidEvent(DeadLetterError):
    """An event that breaks the contract (bad JSON, schema, identifiers, ...)."""


class RetryableError(PipelineError):
    """A transient failure of something outside the process; retry with backoff."""


class ClickHouseUnavailable(RetryableError):
    """ClickHouse could not be reached or rejected a write for now."""


class KafkaUnavailable(RetryableError):
    """The Kafka cluster could not be reached in time."""


class FatalError(PipelineError):
    """The process cannot go on; report the message and exit non-zero."""


class StateTooLarge(FatalError):
    """A state value exceeds what a changelog record may hold and its table has no rule to trim it."""


class DeliveryFailed(FatalError):
    """Kafka gave up delivering an output; stop before committing its input."""


class ConfigError(FatalError):
    """Settings are missing or invalid."""


class StackError(FatalError):
    """The local Kafka stack cannot be fetched, started or stopped."""


class MigrationError(FatalError):
    """A ClickHouse migration failed or the recorded history disagrees with the files."""


class CommitNotMade(FatalError):
    """Asked to stop while the broker was away: the last offsets are not committed, the next run reads
    those records again."""


class DrainInterrupted(FatalError):
    """A drain was stopped (a signal) before it finished: nothing is marked drained, the exit is non-zero."""
