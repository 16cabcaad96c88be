"""User-facing errors: the CLI prints their one-line message and exits 2."""


class RewardsteerError(ValueError):
    """Bad input the user can fix; the message says how."""


class UnknownNameError(RewardsteerError, KeyError):
    def __init__(self, kind: str, name: str, available):
        self.message = f"unknown {kind} '{name}'; available: {', '.join(sorted(available))}"
        super().__init__(self.message)

    def __str__(self):
        return self.message


class WeightsError(RewardsteerError):
    """A weight file that is missing, corrupt, truncated, or not safetensors."""
