"""The chapters of the book: one module per notebook (each defines `EXPERIMENT`), plus the shared `backbone`.
A new chapter is one module here, its notebook, and a test; discovery scans only this folder."""
from __future__ import annotations

import importlib
import pkgutil


def discover() -> dict:
    """Every module of this package that defines EXPERIMENT, in notebook order."""
    from ..experiments import Experiment

    found = [getattr(importlib.import_module(f"{__name__}.{m.name}"), "EXPERIMENT", None)
             for m in pkgutil.iter_modules(__path__)]
    return {e.name: e for e in sorted((e for e in found if isinstance(e, Experiment)), key=lambda e: e.notebook)}
