"""The book builds with warnings as errors, renders in a browser, and fetches nothing from outside the machine.

The build tests (marked `book`) execute the real notebooks with the smoke profile and a temporary store once
notebooks/01_phenomenon.ipynb exists; before that they build a one-chapter dummy book with stubbed experiments.
"""
import json
import re
import shutil
import sys
import tempfile
import types
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar
from urllib.parse import unquote, urlsplit

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from cascade import book

REPO = Path(__file__).resolve().parents[1]
REAL = (REPO / "notebooks" / "01_phenomenon.ipynb").exists()
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
PROGRESS_LINE = "\r 50%|#####     | 1/2 [00:01<00:01,  1.00it/s]\n"


@dataclass(frozen=True)
class StubRun:
    """A stand-in run for the stubbed chapters: a name and the runs it depends on."""

    kind: ClassVar[str] = "stub"
    version: ClassVar[int] = 1
    name: str
    after: tuple = ()

    def deps(self):
        return self.after


STUB_A, STUB_B = StubRun("a"), StubRun("b")
STUB_C, STUB_E = StubRun("c", after=(STUB_A,)), StubRun("e")
STUB_RUNS = {"dummy": [STUB_A, STUB_B, STUB_C], "later": [STUB_B, STUB_E]}  # b is shared


def stub_experiments(mp):
    """Install a fake cascade.experiments: claim C1 holds, C2 fails, C3 is inconclusive, C4 has no result,
    T1 has no experiment. Chapter "dummy" needs runs a, b, c (c after a), "later" needs b (shared) and e; nothing
    is stored, and `compute` records what it is asked and computes nothing."""
    from cascade.store import Store

    from cascade.stats import Verdict

    verdicts = {"dummy": [
        Verdict("C1", "reproduces", 0.0, True, "", (0.05, 0.1234, 0.2), 0.1234, (0.05, 0.2), 0.08, "lr=0.1", "",
                "the effect is +0.123"),
        Verdict("C2", "does not reproduce", 0.0, True, "", (-0.5, -0.5), -0.5, (-0.75, -0.25), None, "", "",
                "the effect is -0.5"),
        Verdict("C3", "inconclusive", 0.0, True, "", (0.1,), None, (None, None), None, "", "", "")]}
    module = types.ModuleType("cascade.experiments")
    module.PROFILES = ("smoke", "paper")
    module.CLAIMS = {"C1": "Weights shed | cascade", "C2": "Shedding beats GMP", "C3": "Depth matters",
                     "C4": "Width matters", "T1": "Untested"}
    registry = {name: SimpleNamespace(name=name, notebook=nb, claims=claims, make_config=lambda profile: None,
                                      all_runs=lambda cfg, name=name: list(STUB_RUNS[name]), figures=figures)
                for name, nb, claims, figures in [("dummy", "01_dummy", ["C1", "C2", "C3"], {"C1": "fig-dummy"}),
                                                  ("later", "02_later", ["C4"], {})]}
    module.REGISTRY = registry
    module.registry = lambda: registry
    module.get = lambda name: registry[name]

    def check_profile(profile):
        if profile not in module.PROFILES:
            raise ValueError(f"unknown profile {profile!r}; allowed: {', '.join(module.PROFILES)}")

    def check_workers(workers):
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers={workers!r} is invalid; allowed: an int >= 1")

    @dataclass(frozen=True)
    class Profile:
        name: str
        store: Store
        configs: dict

        @classmethod
        def resolve(cls, profile="paper", root=None, names=None):
            check_profile(profile)
            return cls(profile, Store(profile, root), {n: None for n in (registry if names is None else names)})

        def runs(self, name):
            return registry[name].all_runs(self.configs[name])

    module.check_profile, module.check_workers, module.Profile = check_profile, check_workers, Profile
    module.computed = []  # (label, runs, force, workers, stored) of every compute() call
    module.work = lambda runs: []  # what compute() says it computed: nothing, so nothing is written

    def compute(label, runs, store, force=False, quiet=False, workers=1, scheduler=None):
        module.computed.append((label, list(runs), force, workers, {r.name for r in runs if store.get(r)}))
        return module.work(runs)

    module.compute = compute
    module.cached_verdicts = lambda name, profile: verdicts.get(name, []) if profile.name == "smoke" else []
    mp.setitem(sys.modules, "cascade.experiments", module)
    mp.setattr(sys.modules["cascade"], "experiments", module, raising=False)
    return module


def dummy_notebook() -> nbformat.NotebookNode:
    """A chapter with math, a parameters cell, a progress bar and a warning on stderr, and one figure."""
    params = new_code_cell('profile = "paper"\nforce = False', metadata={"tags": ["parameters"]})
    return new_notebook(cells=[
        new_markdown_cell("# Dummy experiment\n\nThe curve $y = x^2$ for profile {code}`smoke`."),
        params,
        new_code_cell(f"import sys\n_ = sys.stderr.write({PROGRESS_LINE!r}), sys.stderr.write('a real warning\\n')"),
        new_code_cell("import matplotlib.pyplot as plt\nplt.plot([0, 1, 2], [0, 1, 4])\nplt.show()",
                      metadata={"mystnb": {"figure": {"name": "fig-dummy", "caption": "The parabola."}}}),
        new_code_cell("print(profile, force)"),
        new_markdown_cell("## Verdict\n\nWhat the claims table links to."),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})


# ---------------------------------------------------------------- pure functions: no build needed


def test_claims_page_rows(monkeypatch, tmp_path):
    stub_experiments(monkeypatch)
    page = book.claims_page(book_experiments().Profile.resolve("smoke", tmp_path), ["01_dummy"], REPO / "book" / "templates" / "claims.md.in",
                            tmp_path / "forest.png")
    rows = [line for line in page.splitlines() if line.startswith("|")][2:]  # after header and rule
    link = "[01 verdict](chapters/01_dummy.ipynb#verdict)"
    assert rows == [  # C1 names the figure that decides it
        rf"| **C1** Weights shed \| cascade | reproduces | 0.123 [0.05, 0.2]; δ = 0 | 3 (± 0.08) | lr=0.1 | "
        rf"{{numref}}`Fig. %s <fig-dummy>`, {link} |",
        f"| **C2** Shedding beats GMP | does not reproduce | -0.5 [-0.75, -0.25]; δ = 0 | 2 |  | {link} |",
        f"| **C3** Depth matters | inconclusive |  | 1 |  | {link} |",
        "| **C4** Width matters | not run |  |  |  | 02_later |",  # no chapter 02_later: no link
        "| **T1** Untested | not yet tested |  |  |  |  |",
    ]
    assert "profile `smoke`" in page
    assert "- **C1** (01_dummy, reproduces): The effect is +0.123." in page  # what the data say, in words
    assert "```{figure} forest.png\n:name: fig-claims-forest" in page and (tmp_path / "forest.png").stat().st_size


def test_tidy_folds_code_but_the_injected_parameters_and_drops_progress_bars():
    nb = new_notebook(cells=[
        new_code_cell("profile = 'smoke'", metadata={"tags": ["injected-parameters"]}),
        new_code_cell("train()", outputs=[
            new_output("stream", name="stderr", text=PROGRESS_LINE + "UserWarning: lr is high\n"),
            new_output("stream", name="stderr", text="epoch 1: 100%|##########| 10/10 [00:02<00:00, 4.1it/s]\n"),
            new_output("stream", name="stdout", text=" 50%|#####| 1/2 kept: stdout is not stderr\n")]),
        new_markdown_cell("text"),
    ])
    book.tidy(nb)
    assert nb.cells[0].metadata.tags == ["injected-parameters"]  # what the chapter ran with stays in view
    assert nb.cells[1].metadata.tags == ["hide-input"] and "tags" not in nb.cells[2].metadata
    assert [(o.name, o.text) for o in nb.cells[1].outputs] == [
        ("stderr", "UserWarning: lr is high\n"), ("stdout", " 50%|#####| 1/2 kept: stdout is not stderr\n")]


def test_toc_opens_on_the_claims_and_lists_chapters_between_intro_and_methods():
    assert book.toc(["01_a", "02_b"]).splitlines()[1:] == [
        "format: jb-book", "root: claims", "chapters:", "- file: intro", "- file: chapters/01_a",
        "- file: chapters/02_b", "- file: methods", "- file: appendix"]


def test_unknown_chapter_is_refused_before_any_work(tmp_path, monkeypatch):
    stub_experiments(monkeypatch)
    (tmp_path / "01_dummy.ipynb").write_text("{}")
    with pytest.raises(ValueError, match=r"unknown experiment or notebook 'nope'; allowed: .*01_dummy.*dummy"):
        book.build(only="nope", notebook_dir=tmp_path, out_dir=tmp_path / "book")
    with pytest.raises(ValueError, match=r"unknown profile 'huge'; allowed: smoke, paper"):
        book.build(profile="huge", notebook_dir=tmp_path, out_dir=tmp_path / "book")
    assert not (tmp_path / "book").exists()


def test_compute_plans_the_chapters_runs_once_and_records_its_wall_time(tmp_path, monkeypatch):
    stub = stub_experiments(monkeypatch)
    monkeypatch.setenv("CASCADE_RESULTS", str(tmp_path))
    with pytest.raises(ValueError, match=r"^workers=0 is invalid; allowed: an int >= 1$"):
        book.build(profile="smoke", notebook_dir=tmp_path, out_dir=tmp_path / "book", workers=0)
    assert stub.computed == []  # refused before any work
    smoke = stub.Profile.resolve("smoke")
    book.compute(smoke, ["01_dummy"], force=False, workers=2)  # nothing computed: nothing written
    assert stub.computed == [("the book", [STUB_A, STUB_B, STUB_C], False, 2, set())]
    assert not (tmp_path / "smoke" / book.COMPUTE).exists()
    stub.computed.clear()
    stub.work = lambda runs: [r for r in runs if r != STUB_C]  # c was stored, say
    book.compute(smoke, ["01_dummy", "02_later"], force=False, workers=2)
    # one plan for both chapters, dependencies first, the shared run once
    assert stub.computed == [("the book", [STUB_A, STUB_B, STUB_C, STUB_E], False, 2, set())]
    record = json.loads((tmp_path / "smoke" / book.COMPUTE).read_text())
    # b counts for the first chapter that needs it
    assert record["runs_computed"] == {"dummy": 2, "later": 1}
    assert record["workers"] == 2 and record["threads_per_process"] == 1
    section = book.compute_section(smoke)
    assert "| 01_dummy | 3 | 3 | 0 | 0.0 | 0 |" in section and "| 02_later | 2 | 1 | 0 | 0.0 | 0 |" in section
    assert f"it computed 3 of them in **{record['wall_time_s'] / 60:.0f} minutes** of wall time, with 2 " in section


def test_compute_with_force_leaves_the_stored_records_to_be_replaced_as_they_are_rewritten(tmp_path, monkeypatch):
    stub = stub_experiments(monkeypatch)
    smoke = stub.Profile.resolve("smoke", tmp_path)
    smoke.store.put(STUB_A, {"old": True})
    book.compute(smoke, ["01_dummy"], force=True, workers=1)
    assert stub.computed == [("the book", [STUB_A, STUB_B, STUB_C], True, 1, {"a"})]  # nothing deleted up front
    assert smoke.store.get(STUB_A)["result"] == {"old": True}


def test_sanitize_config_masks_machine_specific_text():
    from nbval.plugin import get_sanitize_patterns

    patterns = get_sanitize_patterns((REPO / "tests" / "nbval_sanitize.cfg").read_text())

    def sanitize(text):
        for regex, replace in patterns:
            text = re.sub(regex, replace, text)
        return text

    assert sanitize("saved /work/main/results/ab.pt in 12.3 s") == "saved PATH in TIME"
    assert sanitize("commit 3f2a9c1 on 2025-03-01T12:30:05+01:00") == "commit COMMIT on DATE"
    assert sanitize("took 4 min (250ms/batch, 12.5 it/s), 2m13s at 9:30:05") == \
        "took TIME (TIME/batch, RATE), TIME at CLOCK"
    # results themselves must survive: ratios, percentages, plain numbers, hex-looking words
    kept = "epoch 3/10: acc 91.2%, 1/2/3, 1234567 weights, defaced, resnet20 with 5 seeds"
    assert sanitize(kept) == kept


@pytest.mark.book
def test_failing_notebook_is_one_line_error(tmp_path, monkeypatch):
    stub_experiments(monkeypatch)
    bad = new_notebook(cells=[new_code_cell("raise RuntimeError('boom\\nsecond line')")],
                       metadata=dummy_notebook().metadata)
    (tmp_path / "nbs").mkdir()
    nbformat.write(bad, tmp_path / "nbs" / "01_dummy.ipynb")
    # cell 2: papermill's injected-parameters cell runs first
    with pytest.raises(book.BookError, match=r"^01_dummy.ipynb failed in cell 2: RuntimeError: boom \(exec") as err:
        book.build(profile="smoke", notebook_dir=tmp_path / "nbs", out_dir=tmp_path / "book")
    assert "\n" not in str(err.value)


@pytest.mark.book
def test_sphinx_warning_fails_the_build(tmp_path, monkeypatch):
    stub_experiments(monkeypatch)
    shutil.copytree(REPO / "book", tmp_path / "src", ignore=shutil.ignore_patterns("_build", "chapters", "mathjax"))
    (tmp_path / "src" / "methods.md").write_text("# Methods\n\nSee {ref}`no-such-label`.\n")
    (tmp_path / "nbs").mkdir()
    with pytest.raises(book.BookError, match=r"^jupyter-book build failed: .*no-such-label.*full log: "):
        book.build(book_dir=tmp_path / "src", notebook_dir=tmp_path / "nbs", out_dir=tmp_path / "book")


# ---------------------------------------------------------------- the built book


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """index.html of the book built with the smoke profile into a temporary directory."""
    tmp = tmp_path_factory.mktemp("book")
    with pytest.MonkeyPatch.context() as mp:
        if REAL:
            mp.setenv("CASCADE_RESULTS", str(tmp / "store"))
            return book.build(profile="smoke", out_dir=tmp / "book")
        stub_experiments(mp)
        (tmp / "notebooks").mkdir()
        nbformat.write(dummy_notebook(), tmp / "notebooks" / "01_dummy.ipynb")
        return book.build(profile="smoke", out_dir=tmp / "book", notebook_dir=tmp / "notebooks")


@pytest.mark.book
def test_chapters_are_executed_and_tidied(built):
    chapters = sorted((built.parents[2] / "chapters").glob("*.ipynb"))
    assert chapters
    for chapter in chapters:
        nb = nbformat.read(chapter, as_version=4)
        assert nb.metadata.papermill.parameters == {"profile": "smoke"}
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert len(injected) == 1 and "hide-input" not in injected[0].metadata.tags
        assert all("hide-input" in c.metadata.get("tags", []) for c in nb.cells if c.cell_type == "code"
                   and c not in injected)
        assert nb.cells[-1].metadata.tags == [book.FOOTER] and nb.cells[-1].source.startswith("## Data and re-run")
        assert f"{{download}}`{chapter.stem}.csv <../data/{chapter.stem}.csv>`" in nb.cells[-1].source
        stderr = [o.text for c in nb.cells if c.cell_type == "code" for o in c.outputs
                  if o.output_type == "stream" and o.name == "stderr"]
        assert not any(book.PROGRESS.search(text) for text in stderr)
    if not REAL:
        assert stderr == ["a real warning\n"]


@pytest.mark.book
def test_each_chapter_has_its_records_as_csv_and_keys(built):
    import pandas as pd

    data = built.parents[2] / book.DATA
    for chapter in sorted((built.parents[2] / "chapters").glob("*.ipynb")):
        keys = json.loads((data / f"{chapter.stem}.keys.json").read_text())["records"]
        if not REAL:
            assert keys == []
            continue
        frame = pd.read_csv(data / f"{chapter.stem}.csv")
        assert frame.key.tolist() == [k["key"] for k in keys] and len(frame) > 0
        assert {"kind", "seed", "meta.wall_time_s"} <= set(frame.columns)
        for k in keys:  # the fixture's store is tmp/store, beside tmp/book
            assert k["record"] == f"smoke/{k['kind']}/{k['key']}.json"
            assert (built.parents[3] / "store" / k["record"]).exists()


@pytest.mark.book
def test_appendix_records_versions_hardware_and_wall_time(built):
    appendix = (built.parents[2] / "appendix.md").read_text()
    from importlib.metadata import version

    assert f"| torch | {version('torch')} |" in appendix
    assert re.search(r"\| cores \| \d+ \|", appendix)
    assert re.search(r"\| 01_\w+ \| smoke \| \d+\.\d s \|", appendix)
    assert "-p profile smoke" in appendix


class _Resources(HTMLParser):
    """Collects the URLs a browser would fetch by itself, and the relative <a href> targets."""
    FETCHED = {"script": "src", "img": "src", "iframe": "src", "source": "src", "video": "src", "audio": "src",
               "embed": "src", "object": "data", "input": "src", "track": "src"}
    LINK_RELS = {"stylesheet", "preload", "modulepreload", "prefetch", "icon", "shortcut", "apple-touch-icon",
                 "manifest", "preconnect", "dns-prefetch"}

    def __init__(self):
        super().__init__()
        self.fetched, self.links, self.styles = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = {k: v or "" for k, v in attrs}
        if tag in self.FETCHED and attrs.get(self.FETCHED[tag]):
            self.fetched.append(attrs[self.FETCHED[tag]])
        if "srcset" in attrs:
            self.fetched += [part.split()[0] for part in attrs["srcset"].split(",") if part.strip()]
        if tag == "link" and self.LINK_RELS & set(attrs.get("rel", "").lower().split()):
            self.fetched.append(attrs.get("href", ""))
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        self.styles.append(attrs.get("style", ""))

    def handle_data(self, data):
        self.styles.append(data if self.lasttag == "style" else "")


REDIRECT = re.compile(r'<meta http-equiv="Refresh" content="0; url=([^"]+)"', re.I)
EXTERNAL = re.compile(r"^\s*(?:https?:)?//", re.I)
CSS_EXTERNAL = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])\s*(?:https?:)?//""", re.I)


def book_experiments():
    from cascade import experiments

    return experiments


def _pages(html: Path) -> list[Path]:
    return sorted(p for p in html.rglob("*.html") if not {"_static", "_sources"} & set(p.relative_to(html).parts))


@pytest.mark.book
def test_html_fetches_nothing_external_and_links_resolve(built):
    html = built.parent
    bad, broken = [], []
    for page in _pages(html):
        parser = _Resources()
        parser.feed(page.read_text())
        parser.links += REDIRECT.findall(page.read_text())
        bad += [f"{page.name}: {url}" for url in parser.fetched if EXTERNAL.match(url)]
        bad += [f"{page.name}: inline style" for css in parser.styles if CSS_EXTERNAL.search(css)]
        for href in parser.links:
            parts = urlsplit(href)
            if not parts.scheme and not href.startswith("#") and parts.path:
                target = page.parent / unquote(parts.path)
                if not target.exists() or (parts.fragment and f'id="{parts.fragment}"' not in target.read_text()):
                    broken.append(f"{page.name}: {href}")
    bad += [str(css.relative_to(html)) for css in html.rglob("*.css") if CSS_EXTERNAL.search(css.read_text())]
    assert not bad, f"external resources: {bad}"
    assert not broken, f"broken relative links: {broken}"
    claims = (html / "claims.html").read_text()
    assert re.search(r'href="chapters/0\d_\w+\.html#verdict"', claims), "claims table links no chapter's verdict"
    assert REDIRECT.search((html / "index.html").read_text()).group(1) == "claims.html"  # the book opens on it
    if REAL:  # each tested claim links the figure that decides it, which is in that chapter
        for exp in book_experiments().REGISTRY.values():
            for label in exp.figures.values():
                assert re.search(rf'href="chapters/{exp.notebook}\.html#{label}"', claims), label
                assert f'id="{label}"' in (html / "chapters" / f"{exp.notebook}.html").read_text()


_INSPECT = """async () => {
  for (const img of document.images) img.loading = "eager";
  await Promise.all([...document.images].map(i => i.complete ? null :
      new Promise(done => { i.addEventListener("load", done); i.addEventListener("error", done); })));
  if (document.querySelector(".math") && window.MathJax && MathJax.startup) await MathJax.startup.promise;
  const article = document.querySelector("article.bd-article") || document.body;
  const column = article.getBoundingClientRect();
  const shown = e => e.checkVisibility() && e.innerText.trim().length > 0;  // a closed <details> hides its text
  const inputs = [...document.querySelectorAll("div.cell div.cell_input")];
  const injected = e => e.closest("div.cell").classList.contains("tag_injected-parameters");
  return {title: document.title.trim(), text: document.body.innerText.trim().length,
          broken: [...document.images].filter(i => !(i.naturalWidth > 0)).map(i => i.src),
          images: [...document.images].filter(i => i.naturalWidth > 0).length,
          figures: [...document.querySelectorAll("figure img")].filter(i => i.naturalWidth > 0)
                       .map(i => i.src.split("/").pop()),
          captions: [...document.querySelectorAll("figure figcaption")].map(c => c.innerText.trim()),
          overflow: [...document.images].filter(i => i.getBoundingClientRect().right > column.right + 1 ||
                                                     i.getBoundingClientRect().left < column.left - 1)
                        .map(i => `${i.src.split("/").pop()}: ${i.getBoundingClientRect().width}px`),
          column: column.width,
          openCode: inputs.filter(e => !injected(e) && shown(e)).length,
          params: inputs.filter(e => injected(e) && shown(e)).length,
          placeholders: (article.innerText.match(/[{]glue[^}]*[}]/g) || []).length,
          pasted: article.querySelectorAll(".pasted-text").length,
          downloads: [...document.querySelectorAll("a.download")].map(a => a.getAttribute("href")),
          math: document.querySelectorAll(".math").length,
          typeset: document.querySelectorAll("mjx-container").length,
          errors: document.querySelectorAll("mjx-merror").length};
}"""


def _local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("file", "data", "blob", "about") or parts.hostname in ("localhost", "127.0.0.1", "::1")


@pytest.mark.book
def test_every_page_renders_offline_in_chromium(built):
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on PATH (`make browser` installs it)")
    html = built.parent
    requested, problems, math_pages = [], [], 0
    with sync_api.sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
        browser = pw.chromium.launch_persistent_context(  # a 1300 px window: the column must hold every figure
            profile, executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1300, "height": 900})
        browser.on("request", lambda request: requested.append(request.url))
        # Never let a request leave the machine, even while failing: abort it (it is recorded above).
        browser.route("**/*", lambda route: route.continue_() if _local(route.request.url) else route.abort())
        tab = browser.new_page()
        js_errors = []
        tab.on("pageerror", lambda err: js_errors.append(str(err)))
        for page in _pages(html):
            name = str(page.relative_to(html))
            tab.goto(page.as_uri(), wait_until="load")
            redirect = REDIRECT.search(page.read_text())
            if redirect:  # jupyter-book's index.html: inspect where it lands
                tab.wait_for_url((page.parent / redirect.group(1)).as_uri(), wait_until="load")
            seen = tab.evaluate(_INSPECT)
            if not seen["title"] or not seen["text"]:
                problems.append(f"{name}: empty page")
            if seen["broken"]:
                problems.append(f"{name}: images not loaded: {seen['broken']}")
            if seen["overflow"]:
                problems.append(f"{name}: figures wider than the {seen['column']}px column: {seen['overflow']}")
            if seen["openCode"]:
                problems.append(f"{name}: {seen['openCode']} code inputs shown; only the parameters should be")
            if seen["placeholders"]:
                problems.append(f"{name}: {seen['placeholders']} glue placeholders left in the text")
            if name.startswith("chapters/"):
                if not seen["figures"] or len(seen["captions"]) < len(seen["figures"]):
                    problems.append(f"{name}: figures without a numbered caption ({seen})")
                if not all(re.match(r"Fig\. \d+", c) for c in seen["captions"]):
                    problems.append(f"{name}: unnumbered caption in {seen['captions']}")
                if seen["params"] != 1:
                    problems.append(f"{name}: the injected parameters are not in view")
                if REAL and not seen["pasted"]:
                    problems.append(f"{name}: no number glued into the prose")
                files = [unquote(urlsplit(href).path) for href in seen["downloads"]]
                if sorted(Path(f).suffixes[-1] for f in files) != [".csv", ".json"] or \
                        not all((page.parent / f).is_file() for f in files):
                    problems.append(f"{name}: the record downloads do not resolve: {seen['downloads']}")
            if name == "claims.html" and book.FOREST not in seen["figures"]:
                problems.append(f"claims.html: the forest plot did not load ({seen['figures']})")
            if seen["math"]:
                math_pages += 1
                if not seen["typeset"] or seen["errors"]:
                    problems.append(f"{name}: math not typeset ({seen})")
        browser.close()
    assert not problems, problems
    assert not js_errors, js_errors
    assert math_pages, "no page has math: MathJax is untested"
    assert all(_local(url) for url in requested), [url for url in requested if not _local(url)]
    assert any(urlsplit(url).path.endswith("/_static/mathjax/tex-mml-chtml.js") for url in requested), \
        "MathJax was not loaded from the book"


def test_compute_section_sums_stored_wall_time_and_counts_shared_runs_once(tmp_path, monkeypatch):
    """Hand-computed: 90 s + 30 s stored for two of chapter 01's runs, 60 s for a run only chapter 90 has."""
    from cascade import experiments
    from cascade import runs as R
    from cascade.store import Store

    monkeypatch.setenv("CASCADE_RESULTS", str(tmp_path))
    phen = experiments.get("phenomenon")
    prec = experiments.get("precision")
    shared = phen.all_runs(phen.make_config("smoke"))
    own = [r for r in prec.all_runs(prec.make_config("smoke")) if r not in shared]
    assert own and all(r.finetune.precision == "bf16" for r in own)
    store = Store("smoke")
    pretrain = next(r for r in shared if isinstance(r, R.PretrainRun))
    control = next(r for r in shared if isinstance(r, R.FinetuneRun))
    results = {"pretrain": {"epochs": 1, "history": [], "final": {"test_acc": 0.5}, "counts": {}},  # what the
               "finetune": {"tau0": 0.1, "sparsity": 0.1, "history": [], "final": {"test_acc": 0.5},  # schemas ask
                            "tracker": []}}
    for run, seconds in ((pretrain, 90.0), (control, 30.0), (own[0], 60.0)):
        store.put(run, results[run.kind], {"wall_time_s": seconds})
    smoke = experiments.Profile.resolve("smoke")
    rows = {line.split(" | ")[0].strip("| "): line for line in book.compute_section(smoke).splitlines()}
    assert rows["01_phenomenon"] == f"| 01_phenomenon | {len(shared)} | {len(shared)} | 2 | 2.0 | 0 |"
    n_prec = len(prec.all_runs(prec.make_config("smoke")))
    assert rows["90_precision"] == f"| 90_precision | {n_prec} | {len(own)} | 1 | 1.0 | 0 |"
    assert "The last time" not in book.compute_section(smoke)  # no compute.json yet
    other = experiments.Profile.resolve("smoke", tmp_path / "elsewhere")  # the resolved profile's store is read
    assert f"| 01_phenomenon | {len(shared)} | {len(shared)} | 0 | 0.0 | 0 |" in book.compute_section(other)


def test_record_span_runs_from_the_first_start_to_the_last_end():
    recs = [{"meta": {"created": "2026-01-01T10:00:10Z", "wall_time_s": 10.0}},  # ran 10:00:00 to 10:00:10
            {"meta": {"created": "2026-01-01T10:01:00Z", "wall_time_s": 30.0}},  # ran 10:00:30 to 10:01:00
            {"meta": {"wall_time_s": 99.0}}]  # no timestamp: left out
    assert book.record_span_s(recs) == 60.0
    assert book.record_span_s([]) == 0.0


def test_busy_time_is_the_union_of_the_runs_intervals_without_the_pauses():
    recs = [{"meta": {"created": "2026-01-01T10:00:10Z", "wall_time_s": 10.0}},  # 10:00:00 to 10:00:10
            {"meta": {"created": "2026-01-01T10:00:08Z", "wall_time_s": 4.0}},  # 10:00:04 to 10:00:08: inside
            {"meta": {"created": "2026-01-01T10:00:15Z", "wall_time_s": 10.0}},  # 10:00:05 to 10:00:15: overlaps
            {"meta": {"created": "2026-01-01T11:00:20Z", "wall_time_s": 20.0}},  # an hour later, 20 s
            {"meta": {"wall_time_s": 99.0}}]  # no timestamp: left out
    assert book.busy_s(recs) == 15.0 + 20.0
    assert book.record_span_s(recs) == 3620.0
    assert book.busy_s([]) == 0.0
