"""docs/contract.md names every rule of the catalogue and every configuration key with its default."""

from pathlib import Path

import yaml

from pipeline.config import Config

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "contract.md").read_text(encoding="utf-8")


def test_every_rule_is_in_the_contract():
    rules = yaml.safe_load((ROOT / "pipeline/data/rules.yaml").read_text(encoding="utf-8"))
    missing = [r for r in rules if f"`{r}`" not in DOC]
    assert not missing, missing


def test_every_configuration_key_is_in_the_contract_with_its_default():
    rows = {line.split("|")[1].strip(" `"): line.split("|")[2].strip(" `")
            for line in DOC.splitlines() if line.startswith("| `") and "." in line.split("|")[1]}
    for section, field in Config.model_fields.items():
        for key, f in field.annotation.model_fields.items():
            name = f"{section}.{key}"
            assert name in rows, name
            default = f.get_default(call_default_factory=True)
            if default not in (None, "") and not isinstance(default, dict | list | tuple):
                assert rows[name] == str(default).replace("False", "false"), (name, rows[name], default)
