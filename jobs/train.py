"""Ray job entrypoint: train one model.

    ray job submit --working-dir . -- python -m jobs.train --model iris --promote

Same flags as `raylife train` (see `raylife train --help`); inside a job it joins the job's cluster.
"""

import sys

from raylife.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
