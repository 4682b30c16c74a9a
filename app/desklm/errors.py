"""The one exception type a user ever sees.

Every failure a user can cause (a bad file, a bad setting, a message too long for the context)
is raised as :class:`DeskLMError` with a one-line reason. The CLI prints
``desklm: error: <reason>`` and exits 2; the GUI shows the reason in a dialog and keeps running.
"""

from __future__ import annotations


class DeskLMError(Exception):
    """A failure with a one-line, user-facing reason."""

    def __init__(self, reason: str) -> None:
        reason = " ".join(str(reason).split())  # always one line
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason
