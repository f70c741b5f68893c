"""The frozen app's entry point: the same command line as `muse-desktop`."""

import sys

from muse_desktop.cli import main

if __name__ == "__main__":
    sys.exit(main())
