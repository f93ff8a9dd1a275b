"""Print the serving image's requirements, read from pyproject.toml (one source of truth).

Base dependencies plus the `serve` extra; never the `train` extra, so torch cannot reach the
serving image.
"""

import re
import sys
import tomllib

with open(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml", "rb") as handle:
    project = tomllib.load(handle)["project"]
requirements = [*project["dependencies"], *project["optional-dependencies"]["serve"]]
names = {re.match(r"[A-Za-z0-9_.-]+", r.strip()).group(0).lower() for r in requirements}  # type: ignore[union-attr]
if "torch" in names:
    sys.exit("torch must never be a serving requirement")
print("\n".join(requirements))
