"""The README's device reference is generated from the device models and current."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from clustersim.sim.resources import KIND_MODELS, KINDS, fields_markdown

ROOT = Path(__file__).resolve().parents[3]


def _tool():
    spec = importlib.util.spec_from_file_location(
        "readme_sections", ROOT / "tools" / "readme_sections.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_field_of_every_kind_is_documented():
    """Each device kind has a model, and each of its fields a description and a row."""
    text = fields_markdown()
    assert set(KIND_MODELS) == set(KINDS)
    for kind, model in KIND_MODELS.items():
        assert f"[[resources.{kind}]]" in text
        for name, field in model.model_fields.items():
            if name != "kind":
                assert field.description, f"{kind}.{name} has no description"
                assert f"| `{name}` |" in text


def test_readme_device_fields_are_current():
    readme = (ROOT / "README.md").read_text()
    assert _tool().generated(readme) == readme, "run: python tools/readme_sections.py"
