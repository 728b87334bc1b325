"""Per-org / per-group policy files (YAML). The rule families read their settings from here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipeline.config import ConfigError


def load_policy(path: str | Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"policy: cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"policy: {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"policy: {path} must be a mapping")
    return data
