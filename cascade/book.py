"""Build the companion book: execute the notebooks, write the generated pages, run Jupyter Book offline.

Notebooks are executed here with papermill (not by Jupyter Book) so each chapter records its parameters and
wall time, and so the book can be rebuilt from stored results without recomputing anything.
"""
from __future__ import annotations

import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from importlib import metadata
from pathlib import Path
from string import Template

import nbformat

from . import provenance
from .report import markdown_table

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = re.compile(r"^\d\d_\w+\.ipynb$")
KERNEL = "python3"
# Lines of a stderr stream that are progress bars (tqdm and friends): carriage returns, "42%|", "3/10 [", "it/s]".
PROGRESS = re.compile(r"\r|\d+%\||\d+/\d+ \[|\d+it \[|(?:it/s|s/it)\]")
COMPUTE = "compute.json"  # wall time of the last compute phase of `build`, per profile
DATA = "data"  # the book's folder of per-chapter record downloads
FOREST = "claims_forest.png"
FOOTER = "cascade-data"  # tag of the cell the build appends to each chapter
VERSIONED = ["torch", "torchvision", "numpy", "jupyter-book", "papermill"]


class BookError(RuntimeError):
    """One-line reason the book could not be built."""


def build(profile="paper", only=None, force=False, book_dir=None, out_dir=None, notebook_dir=None,
          workers: int = 1, scheduler: str | None = None) -> Path:
    """Compute the missing runs, execute the notebooks (all, or the one named `only`) and build the book; return
    its index.html.

    The runs behind the chapters are computed first, in `workers` single-threaded processes (see
    `experiments.compute`), so the notebooks only read the store. `book_dir` is the book's source (default
    book/); with `out_dir` it is copied there first and built there, so tests leave the repository untouched.
    `notebook_dir` defaults to notebooks/.
    """
    from cascade import experiments

    resolved = experiments.Profile.resolve(profile)
    src = Path(book_dir or REPO / "book")
    nb_dir = Path(notebook_dir or REPO / "notebooks")
    notebooks = sorted(p for p in nb_dir.glob("*.ipynb") if NOTEBOOK.match(p.name))
    todo = notebooks if only is None else [_select(only, notebooks)]
    experiments.check_workers(workers)
    try:
        compute(resolved, [nb.stem for nb in todo], force, workers, scheduler)
        return _build(resolved, src, Path(out_dir) if out_dir else src, notebooks, todo)
    except BookError:
        raise
    except Exception as err:  # anything else still reads as one line; the chain keeps the traceback
        raise BookError(f"book build failed: {type(err).__name__}: {_first_line(err)}") from err


def _first_line(err) -> str:
    return next(iter(str(err).strip().splitlines()), "")


def compute(profile, notebooks: list[str], force: bool, workers: int, scheduler: str | None = None) -> None:
    """Compute what the chapters behind `notebooks` need under the resolved `profile` (`experiments.Profile`), as
    one plan, so a run that chapters share is computed once (all of them again with `force`, each record replaced
    only when its new one is written), in `workers` local processes or on the Dask cluster at `scheduler`.

    When anything was computed, its wall time goes to <store>/<profile>/compute.json for the appendix.
    """
    import torch

    from cascade import experiments, runs as R
    from cascade.store import atomic_write_text

    store = profile.store
    names = [e.name for e in experiments.registry().values() if e.notebook in notebooks and e.name in profile.configs]
    by_chapter = {n: profile.runs(n) for n in names}
    start = time.perf_counter()
    work = experiments.compute("the book", R.closure([r for runs in by_chapter.values() for r in runs]), store,
                               force, False, workers, scheduler)
    if work:
        first = {}
        for name, runs in by_chapter.items():  # a shared run counts for the first chapter that needs it
            for r in runs:
                first.setdefault(r, name)
        computed = {n: sum(first[r] == n for r in work) for n in names}
        atomic_write_text(store.root / profile.name / COMPUTE, json.dumps({
            "wall_time_s": round(time.perf_counter() - start, 1), "runs_computed": computed, "workers": workers,
            **({"scheduler": scheduler} if scheduler else {}),
            "threads_per_process": 1 if workers > 1 else torch.get_num_threads(), "hardware": dict(provenance.machine())["CPU"],
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1) + "\n")


def _build(profile, src: Path, book: Path, notebooks: list[Path], todo: list[Path]) -> Path:
    if book.resolve() != src.resolve():
        shutil.copytree(src, book, dirs_exist_ok=True, ignore=shutil.ignore_patterns("_build", "__pycache__"))
    chapters = book / "chapters"
    chapters.mkdir(exist_ok=True)
    _use_venv_kernel()
    for nb in todo:
        execute(nb, chapters / nb.name, profile.name)
    for nb in notebooks:  # chapters never executed are shown as they are, so the table of contents is complete
        if not (chapters / nb.name).exists():
            shutil.copyfile(nb, chapters / nb.name)
    names = [nb.stem for nb in notebooks]
    for name in names:
        write_data(profile, name, book / DATA)
        add_footer(chapters / f"{name}.ipynb", profile.name)
    (book / "_toc.yml").write_text(toc(names))
    templates = book / "templates"
    (book / "claims.md").write_text(claims_page(profile, names, templates / "claims.md.in", book / FOREST))
    (book / "appendix.md").write_text(
        appendix_page(profile, [chapters / f"{n}.ipynb" for n in names], templates / "appendix.md.in"))
    return jupyter_book(book)


def _select(only, notebooks):
    """The notebook named by experiment name, notebook stem ("01_phenomenon") or stem without its number."""
    from cascade import experiments

    by_name = {nb.stem: nb for nb in notebooks} | {nb.stem[3:]: nb for nb in notebooks}
    by_name |= {n: by_name[e.notebook] for n, e in experiments.registry().items() if e.notebook in by_name}
    if only not in by_name:
        raise ValueError(f"unknown experiment or notebook {only!r}; allowed: {', '.join(sorted(by_name))}")
    return by_name[only]


def _use_venv_kernel():
    """Make kernel `python3` run this interpreter, so notebooks see the same packages as the build.

    The kernelspec is installed into sys.prefix and that location is put first on JUPYTER_PATH, so a user-wide
    `python3` kernel of another Python cannot shadow it.
    """
    from ipykernel.kernelspec import install

    share = Path(sys.prefix) / "share" / "jupyter"
    spec = share / "kernels" / KERNEL / "kernel.json"
    if not spec.exists() or json.loads(spec.read_text())["argv"][0] != sys.executable:
        install(prefix=sys.prefix, kernel_name=KERNEL)
    paths = os.environ.get("JUPYTER_PATH", "").split(os.pathsep)
    if paths[0] != str(share):
        os.environ["JUPYTER_PATH"] = os.pathsep.join([str(share)] + [p for p in paths if p])


def execute(notebook: Path, chapter: Path, profile: str) -> None:
    """Run one notebook with papermill into `chapter`, then tidy it for the book."""
    import papermill

    try:
        papermill.execute_notebook(str(notebook), str(chapter), parameters={"profile": profile},
                                   kernel_name=KERNEL, progress_bar=False, cwd=str(notebook.parent))
    except papermill.PapermillExecutionError as err:
        raise BookError(f"{notebook.name} failed in cell {err.exec_count}: {err.ename}: "
                        f"{_first_line(err.evalue or '')} (executed copy: {chapter})") from None
    except Exception as err:  # kernel died, timeout, bad notebook
        raise BookError(f"{notebook.name} could not be executed: {type(err).__name__}: {_first_line(err)}") from err
    nb = nbformat.read(chapter, as_version=4)
    tidy(nb)
    nbformat.write(nb, chapter)


def tidy(nb) -> None:
    """Fold every code cell but the injected parameters behind a toggle (the page reads as prose, figures and
    tables; what was run with is in view) and drop progress bars from stderr, in place."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" not in tags and "hide-input" not in tags:
            cell.metadata.tags = tags + ["hide-input"]
        outputs = []
        for out in cell.outputs:
            if out.output_type == "stream" and out.name == "stderr":
                out.text = "".join(line for line in out.text.splitlines(keepends=True) if not PROGRESS.search(line))
                if not out.text.strip():
                    continue
            outputs.append(out)
        cell.outputs = outputs


def toc(chapters: list[str]) -> str:
    """The table of contents: the book opens on the claims, then intro, one chapter per notebook, methods,
    appendix."""
    files = ["intro", *(f"chapters/{c}" for c in chapters), "methods", "appendix"]
    return ("# Generated by cascade/book.py from notebooks/NN_*.ipynb; do not edit by hand.\n"
            "format: jb-book\nroot: claims\nchapters:\n" + "".join(f"- file: {f}\n" for f in files))


def claims_page(profile, chapters: list[str], template: Path, forest: Path) -> str:
    """The "Claims at a glance" page: the forest plot (drawn to `forest`), then `cascade claims`'s table, each row
    linked to the figure that decides it and to its chapter's verdict."""
    import matplotlib.pyplot as plt

    from cascade import experiments, plots, report

    def link(row):
        nb = row["notebook"]
        if nb not in chapters:
            return nb or ""
        label = experiments.get(row["experiment"]).figures.get(row["claim"])
        figure = f"{{numref}}`Fig. %s <{label}>`, " if label else ""
        return f"{figure}[{nb[:2]} verdict](chapters/{nb}.ipynb#verdict)"

    rows = report.claims(profile)
    tested = [r for r in rows if r["effect"] is not None]
    if tested:
        plots.use_style()
        fig = plots.forest(tested)
        fig.savefig(forest, bbox_inches="tight")
        plt.close(fig)
        figure = (f"```{{figure}} {forest.name}\n:name: fig-claims-forest\n:alt: forest plot of the claims' effects\n\n"
                  "Every tested claim's effect (dot) with its 95% confidence interval over seeds, each on its own "
                  "scale against its own threshold (dashed line). A claim reproduces when its whole interval lies on "
                  "the claim's side of the threshold (green), does not when it lies on the other side (red), and is "
                  "inconclusive when it straddles it (grey). Rows: claim and chapter.\n```")
    else:
        figure = "No claim has a stored estimate for this profile yet."
    return Template(template.read_text()).substitute(
        profile=profile.name, forest=figure, table=report.claims_markdown(rows, link),
        directions=report.directions_markdown(rows) or "No claim has a verdict for this profile yet.")


def write_data(profile, chapter: str, folder: Path) -> None:
    """<folder>/<chapter>.csv (one row per stored run behind the chapter, `report.records_frame`) and
    <chapter>.keys.json (each record's key, kind and path in the store), for readers who analyse the data
    without installing anything."""
    from cascade import experiments, report
    from cascade.store import atomic_write_text

    runs = [r for n, e in experiments.registry().items() if e.notebook == chapter and n in profile.configs
            for r in profile.runs(n)]
    records = [(r, rec) for r in runs if (rec := profile.store.get(r)) is not None]
    folder.mkdir(parents=True, exist_ok=True)
    frame = report.records_frame(records) if records else None
    atomic_write_text(folder / f"{chapter}.csv", "" if frame is None else frame.to_csv(index=False))
    keys = [{"key": rec["key"], "kind": r.kind, "record": f"{profile.name}/{r.kind}/{rec['key']}.json"}
            for r, rec in records]
    atomic_write_text(folder / f"{chapter}.keys.json", json.dumps(
        {"store": "results/ in the repository (or $CASCADE_RESULTS)", "records": keys}, indent=1) + "\n")


def add_footer(chapter: Path, profile: str) -> None:
    """Append (or refresh) the chapter's last cell: its data downloads and the command that regenerates it."""
    nb = nbformat.read(chapter, as_version=4)
    name = chapter.stem
    text = (f"## Data and re-run\n\n"
            f"- The records behind this chapter (profile `{profile}`): "
            f"{{download}}`{name}.csv <../{DATA}/{name}.csv>`, one row per run with its labels, config and scalar "
            f"results; {{download}}`{name}.keys.json <../{DATA}/{name}.keys.json>`, the key and store path of each "
            f"JSON record, which also holds the per-epoch curves.\n- Regenerate this chapter and every figure in it: "
            f"`python -m cascade book --only {name} --profile {profile}`; with other parameters: "
            f"`papermill notebooks/{name}.ipynb out.ipynb -p profile {profile} -p NAME VALUE`.\n")
    cells = [c for c in nb.cells if FOOTER not in c.metadata.get("tags", [])]
    nb.cells = cells + [nbformat.v4.new_markdown_cell(text, metadata={"tags": [FOOTER]})]
    nbformat.write(nb, chapter)


def appendix_page(profile, chapters: list[Path], template: Path) -> str:
    """The reproducibility appendix of the resolved `profile`: versions, hardware, wall times and commands of this
    build."""
    versions = [("python", platform.python_version())] + [(p, metadata.version(p)) for p in VERSIONED]
    papermill = ("papermill notebooks/NN_name.ipynb book/chapters/NN_name.ipynb \\\n"
                 f"    -p profile {profile.name} -k {KERNEL} --cwd notebooks --no-progress-bar")
    return Template(template.read_text()).substitute(
        versions=markdown_table(["package", "version"], versions), hardware=markdown_table(["", "this build"], provenance.machine()),
        walltimes=markdown_table(["notebook", "profile", "wall time"], [(c.stem, *_wall_time(c)) for c in chapters]),
        compute=compute_section(profile),
        profile=profile.name, papermill=papermill, bench=bench_section(REPO / "results" / "bench"))


def busy_s(records) -> float:
    """Seconds during which at least one of the runs was computing (the union of their intervals): a sweep's wall
    time without the pauses between interrupted and resumed parts, which `record_span_s` counts."""
    spans = sorted(_interval(r) for r in records if "created" in r["meta"])
    total, end = 0.0, -math.inf
    for a, b in spans:
        total += max(0.0, b - max(a, end))
        end = max(end, b)
    return total


def _interval(record) -> tuple[float, float]:
    end = datetime.fromisoformat(record["meta"]["created"].replace("Z", "+00:00")).timestamp()
    return end - record["meta"].get("wall_time_s", 0.0), end


def record_span_s(records) -> float:
    """Seconds from the start of the earliest run to the end of the latest: the wall time of a sweep that computed
    them (interruptions included)."""
    spans = [_interval(r) for r in records if "created" in r["meta"]]
    return max(b for _, b in spans) - min(a for a, _ in spans) if spans else 0.0


def compute_section(profile) -> str:
    """Minutes of stored compute per experiment (a run shared with an earlier chapter counted there) and the
    measured wall time of the last compute phase of `build`."""
    from cascade import experiments

    store, seen, rows = profile.store, set(), []
    for exp in sorted(experiments.registry().values(), key=lambda e: e.notebook):
        if exp.name not in profile.configs:
            continue
        runs = profile.runs(exp.name)
        new = [r for r in runs if r not in seen]
        seen.update(runs)
        recs = [store.get(r) for r in new]
        minutes = sum(rec["meta"].get("wall_time_s", 0.0) for rec in recs if rec) / 60
        rows.append((exp.notebook, len(runs), len(new), sum(rec is not None for rec in recs), f"{minutes:.1f}",
                     f"{record_span_s([rec for rec in recs if rec]) / 60:.0f}"))
    text = markdown_table(["notebook", "runs", "not shared with an earlier chapter", "of these stored",
                   "their compute (process-minutes)", "first to last record (minutes)"], rows) + "\n"
    path = store.root / profile.name / COMPUTE
    if path.exists():
        c = json.loads(path.read_text())
        text += (f"\nThe last time `python -m cascade book --profile {profile.name}` computed runs "
                 f"({c['created'][:10]}), it computed {sum(c['runs_computed'].values())} of them in "
                 f"**{c['wall_time_s'] / 60:.0f} minutes** of wall time, "
                 + (f"on the workers of the Dask cluster at {c['scheduler']}.\n" if c.get("scheduler") else
                    f"with {c['workers']} process(es) of {c['threads_per_process']} thread(s) on {c['hardware']}.\n"))
    return text


def _wall_time(chapter: Path) -> tuple[str, str]:
    """(profile, wall time) papermill recorded in an executed chapter; "not executed" otherwise."""
    meta = nbformat.read(chapter, as_version=4).metadata.get("papermill", {})
    if meta.get("duration") is None:
        return "", "not executed"
    return str(meta.get("parameters", {}).get("profile", "")), f"{meta['duration']:.1f} s"


def bench_section(bench_dir: Path) -> str:
    """Markdown for the benchmark section, from `python -m cascade bench`'s bench.json and bench.png.

    The figure is inlined as a data URI: the page then needs no file beside it, whichever folder the book
    is built in, and a missing figure cannot become a Sphinx warning.
    """
    import base64

    from cascade.bench import report as bench_report

    head = "\n## Performance benchmark\n\n"
    path = bench_dir / "bench.json"
    if not path.exists():
        return head + "No benchmark recorded yet: `make bench` (`python -m cascade bench`) records one.\n"
    text = bench_report.markdown(json.loads(path.read_text()))
    png = bench_dir / "bench.png"
    if png.exists():
        text += f"\n![Benchmark](data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()})\n"
    return head + text


def jupyter_book(book: Path) -> Path:
    """Run `jupyter-book build` with warnings as errors; return index.html or raise a one-line BookError."""
    log = book / "_build" / "build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(book),
           "--builder", "html", "-W", "-n", "--keep-going"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log.write_text(proc.stdout + proc.stderr)
    index = book / "_build" / "html" / "index.html"
    if proc.returncode or not index.exists():
        lines = (proc.stderr + proc.stdout).splitlines()
        first = next((l for l in lines if "WARNING" in l or "ERROR" in l), lines[-1] if lines else "no output")
        raise BookError(f"jupyter-book build failed: {first.strip()} (full log: {log})")
    return index
