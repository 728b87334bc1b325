"""Per-org / per-group policy files (YAML). The rule families read their settings from here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.config import read_yaml_mapping


def load_policy(path: str | Path) -> dict[str, Any]:
    return read_yaml_mapping(path, "policy")
