"""The frozen app's entry point: `desklm` (console) and `desklm-gui` (windowed) both start here.
With no arguments it opens the window, exactly as `desklm` does from a terminal."""

import sys

from desklm.cli import main

if __name__ == "__main__":
    sys.exit(main())
