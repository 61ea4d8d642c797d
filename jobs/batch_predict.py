"""Ray job entrypoint: score a table or PNG folder with a stored model version.

    ray job submit --working-dir . -- python -m jobs.batch_predict --model iris \
        --input s3://bucket/batch/iris/ --output s3://bucket/predictions/iris/

Same flags as `raylife batch-predict` (see `raylife batch-predict --help`); inside a job it joins
the job's cluster.
"""

import sys

from raylife.cli import main

if __name__ == "__main__":
    sys.exit(main(["batch-predict", *sys.argv[1:]]))
