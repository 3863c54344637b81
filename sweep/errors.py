"""The one error type for user mistakes: caught by the CLI, printed as one line, exit code 2."""

EXIT_BAD_INPUT = 2


class ConfigError(Exception):
    """A mistake in the config or command line, found before anything is started or written.

    The message names the key, the bad value and how to fix it.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
