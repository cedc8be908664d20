"""Each notebook's parameters cell declares exactly its experiment's config fields, so every papermill
parameter reaches the config (a hand-copied list once exposed `precision` where the config has `precisions`)."""
import ast
import dataclasses
import re
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
    assert any(f'experiments.notebook("{name}", globals())' in src for src in code)


@pytest.mark.parametrize("name", list(experiments.REGISTRY))
def test_every_parameter_reaches_the_config(name):
    exp = experiments.get(name)
    smoke = exp.make_config("smoke")
    for field in dataclasses.fields(exp.config):
        namespace = {"profile": "smoke", "force": False, field.name: getattr(smoke, field.name)}
        assert exp.make_config("smoke", **experiments.overrides(name, namespace)) == smoke
    assert experiments.overrides(name, {"profile": "paper", "seeds": None, "unrelated": 3}) == {}


# A measured number typed into prose: a decimal or a percentage (the CI level "95%" is a convention, not a result).
TYPED = re.compile(r"(?<![\w.])(?:\d+\.\d+|\d+(?:\.\d+)?\s*%)(?![\w.])")
# What may hold digits: glue roles (computed), inline code, math, link targets.
EXEMPT = re.compile(r"\{glue(?::\w+)?\}`[^`]*`|`[^`]*`|\$\$.*?\$\$|\$[^$]*\$|\]\([^)]*\)", re.S)


def typed_numbers(text: str) -> list[str]:
    return [n for n in TYPED.findall(EXEMPT.sub("", text)) if n.replace(" ", "") != "95%"]


def test_typed_numbers_are_found_and_glued_ones_are_not():
    assert typed_numbers("accuracy 0.8945 and 12% of the runs, 95% CI") == ["0.8945", "12%"]
    assert typed_numbers("E = {glue:text}`C1_effect:.3f`, `lr=0.1`, $f = 10\\%$, [x](a/0.1.html), C1, 3 seeds") == []


@pytest.mark.parametrize("name", list(experiments.REGISTRY))
def test_no_result_is_typed_into_a_chapters_prose(name):
    """After the pre-registered protocol (the first cell, written before any result), the prose and the figure
    captions hold no hand-typed measured number: those come from the records through glue."""
    nb = nbformat.read(NOTEBOOKS / f"{experiments.get(name).notebook}.ipynb", as_version=4)
    texts = [c.source for c in nb.cells[1:] if c.cell_type == "markdown"]
    texts += [c.metadata["mystnb"]["figure"]["caption"] for c in nb.cells if "mystnb" in c.metadata]
    assert {t[:40]: typed_numbers(t) for t in texts if typed_numbers(t)} == {}
    assert any("{glue:" in t for t in texts)


@pytest.mark.parametrize("name", list(experiments.REGISTRY))
def test_the_figures_that_decide_claims_exist_with_captions(name):
    exp = experiments.get(name)
    nb = nbformat.read(NOTEBOOKS / f"{exp.notebook}.ipynb", as_version=4)
    figures = {c.metadata["mystnb"]["figure"]["name"]: c.metadata["mystnb"]["figure"]["caption"]
               for c in nb.cells if "mystnb" in c.metadata}
    assert set(exp.figures) <= set(exp.claims) and set(exp.figures.values()) <= set(figures)
    assert all(len(caption.split()) >= 12 for caption in figures.values())  # says what to look at
