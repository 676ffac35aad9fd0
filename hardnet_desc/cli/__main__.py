"""``python -m hardnet_desc.cli COMMAND ...``: the same as the ``hardnet-desc`` command."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
