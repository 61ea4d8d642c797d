"""Ray job entrypoint: a Tune sweep whose trials are Ray Train runs.

    ray job submit --working-dir . -- python -m jobs.tune --model mnist --samples 4 --promote

Same flags as `raylife tune` (see `raylife tune --help`); inside a job it joins the job's cluster.
"""

import sys

from raylife.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
