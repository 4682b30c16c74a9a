"""DeskLM: a private desktop chat app for local GGUF language models."""

import logging
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("desklm")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+src"

# A library-style default: nothing reaches stderr unless the app configures logging.
logging.getLogger("desklm").addHandler(logging.NullHandler())

__all__ = ["__version__"]
