"""``python -m clustersim.studies.remote SCENARIO_TOML OUT_DIR``: one experiment job in its own
interpreter, as :func:`clustersim.studies.jobs.run_remote` starts it on a Dask worker; prints the
job's result as one JSON line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from clustersim.studies.jobs import Job, execute


def main(argv: list[str]) -> int:
    """Run the scenario file ``argv[0]`` into the folder ``argv[1]``; print the result."""
    scenario, out = argv
    job = Job(label="remote", scenario=scenario, overrides=(), seed=None, out_dir=Path(out))
    print(json.dumps(execute(job)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
