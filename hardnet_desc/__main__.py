"""``python -m hardnet_desc COMMAND ...``: the same as the ``hardnet-desc`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
