"""Keep the book's pages self-contained: local MathJax, no Thebe, no duplicated scripts.

* Jupyter Book adds every ``*.js`` under ``_static`` to every page; for the MathJax tree in _static/mathjax that
  would load hundreds of components eagerly, so they are dropped and only ``mathjax_path`` is loaded (MathJax
  fetches the rest on demand, from the same folder). Without the local copy (no npm when ``make mathjax`` ran)
  the CDN is used instead, and the book is no longer offline.
* Thebe would fetch its kernel client from unpkg; launch buttons are off, so its scripts are dropped.
* sphinx-thebe and sphinx-togglebutton register their inline scripts twice under Jupyter Book 1.0; a repeated
  ``const`` is a JavaScript error, so repeated scripts are dropped.
"""
from pathlib import Path

from sphinx.util import logging

CDN = "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"
MATHJAX_DIR = "mathjax/"


def _local_mathjax(app, config):
    config.html_js_files = [js for js in config.html_js_files
                            if not (js[0] if isinstance(js, tuple) else js).startswith(MATHJAX_DIR)]
    if not (Path(app.srcdir) / "_static" / config.mathjax_path).is_file():
        logging.getLogger(__name__).info("local MathJax missing (run `make mathjax`); using %s", CDN)
        config.mathjax_path = CDN


def _is_thebe(asset) -> bool:
    return "thebe" in str(asset.filename or "") or "THEBE_JS_URL" in asset.attributes.get("body", "")


def _page_assets(app, pagename, templatename, context, doctree):
    for key in ("script_files", "css_files"):
        seen, kept = set(), []
        for asset in context.get(key, []):
            identity = (asset.filename or "", tuple(sorted(asset.attributes.items())))
            if identity not in seen and not _is_thebe(asset):
                seen.add(identity)
                kept.append(asset)
        context[key] = kept


def setup(app):
    app.connect("config-inited", _local_mathjax)
    app.connect("html-page-context", _page_assets, priority=900)  # after the themes have added theirs
    return {"parallel_read_safe": True, "parallel_write_safe": True}
