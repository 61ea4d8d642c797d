"""Measure what a per-epoch `ray.train.report` (+ checkpoint) costs (see raylife.measure).

python -m jobs.report_cost --model iris        # or: make report-cost
"""

import argparse
import json

from raylife.cluster import shutdown_if_started
from raylife.config import Settings
from raylife.measure import report_cost

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="iris")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    try:
        print(json.dumps(report_cost(args.model, Settings.from_env(), args.repeats), indent=2))
    finally:
        shutdown_if_started()
