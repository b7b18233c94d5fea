"""The search spaces tests share: the shipped ones, read from the repository, and a two-network space.

Tests pass these to tuners, which only read them; a test that needs a variant builds a new dict
(``{**DEFAULT_SPACE, ...}``).
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPACE = json.loads((ROOT / "search_space.json").read_text())  # what config.yml searches
LEGACY_SPACE = json.loads((ROOT / "search_space_legacy.json").read_text())  # alpha, beta, gamma only

# One point of the constraint and two kernel sizes at stage 4: two networks, so that once both are proposed only
# a second chance (or a promotion) is left to propose.
TWO_NETWORKS = {"alpha": {"_type": "choice", "_value": [1.2]}, "beta": {"_type": "choice", "_value": [1.1]},
                "gamma": {"_type": "choice", "_value": [1.15]}, "stage4_kernel": {"_type": "choice", "_value": [3, 5]}}
