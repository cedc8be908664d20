"""Each notebook's parameters cell declares exactly its experiment's config fields, so every papermill
parameter reaches the config (a hand-copied list once exposed `precision` where the config has `precisions`)."""
import ast
import dataclasses
from pathlib import Path

import nbformat
import pytest

from cascade import experiments

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _cells(exp):
    nb = nbformat.read(NOTEBOOKS / f"{exp.notebook}.ipynb", as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    return params, [c.source for c in nb.cells if c.cell_type == "code"]


@pytest.mark.parametrize("name", list(experiments.REGISTRY))
def test_parameters_cell_matches_the_config(name):
    exp = experiments.get(name)
    params, code = _cells(exp)
    assert len(params) == 1
    declared = [t.id for node in ast.parse(params[0].source).body if isinstance(node, ast.Assign)
                for t in node.targets]
    assert declared == experiments.parameters(name)
    assert any(f'experiments.overrides("{name}", globals())' in src for src in code)


@pytest.mark.parametrize("name", list(experiments.REGISTRY))
def test_every_parameter_reaches_the_config(name):
    exp = experiments.get(name)
    smoke = exp.make_config("smoke")
    for field in dataclasses.fields(exp.config):
        namespace = {"profile": "smoke", "force": False, field.name: getattr(smoke, field.name)}
        assert exp.make_config("smoke", **experiments.overrides(name, namespace)) == smoke
    assert experiments.overrides(name, {"profile": "paper", "seeds": None, "unrelated": 3}) == {}
