"""Ray job entrypoint: the main job (every model through sweep -> promote -> evaluate -> predict)."""

import sys

from raylife.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
