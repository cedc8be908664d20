"""The package is laid out by role: run kinds in cascade/runs, chapters in cascade/chapters, and neither defines
the other's kind of thing."""
import importlib
import inspect
import pkgutil

import cascade.chapters
import cascade.runs
from cascade import experiments
from cascade import runs as R


def _modules(package):
    return [importlib.import_module(f"{package.__name__}.{m.name}") for m in pkgutil.iter_modules(package.__path__)]


def _defined_here(module):
    return [v for v in vars(module).values() if inspect.isclass(v) and v.__module__ == module.__name__]


def test_every_run_kind_lives_in_the_runs_package_and_no_chapter_there():
    for module in _modules(cascade.runs):
        assert not hasattr(module, "EXPERIMENT"), module.__name__
    for cls in R.KINDS.values():
        if cls.kind.startswith("test"):  # kinds that tests define for themselves
            continue
        assert cls.__module__.startswith("cascade.runs."), (cls.kind, cls.__module__)
    assert set(R.__all__) >= {c.__name__ for c in R.KINDS.values() if c.__module__.startswith("cascade.runs.")}


def test_no_chapter_module_defines_a_run_kind_and_every_chapter_is_found():
    for module in _modules(cascade.chapters):
        assert not [c for c in _defined_here(module) if issubclass(c, R.Run)], module.__name__
    found = {e.notebook for e in experiments.registry().values()}
    with_experiment = {m.EXPERIMENT.notebook for m in _modules(cascade.chapters) if hasattr(m, "EXPERIMENT")}
    assert found == with_experiment and len(found) >= 5
