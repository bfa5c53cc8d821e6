"""Errors and exit codes shared by every stage (see docs/ARCHITECTURE.md, "Errors and exit codes")."""

EXIT_OK = 0
EXIT_ERROR = 1  # a V2MError, or a batch in which some file failed
EXIT_USAGE = 2
EXIT_GATE = 3  # evaluate --fail-if threshold not met
EXIT_INTERRUPTED = 130


class V2MError(Exception):
    """An error the user can act on: printed as one line (plus a hint), never a traceback.

    `message` says what went wrong, `hint` what to do about it.
    """

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = self.message.rstrip(".")
        return f"{text}. {self.hint}" if self.hint else text

    def __str__(self) -> str:
        return self.one_line()


class GateFailed(V2MError):
    """`evaluate --fail-if` found a metric outside its threshold (exit 3)."""

    exit_code = EXIT_GATE
