"""``python -m hardnet_desc.train DATA OUT [...]``: the same as ``hardnet-desc train``."""

import sys

from ..cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
