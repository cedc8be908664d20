# Two entry points for people: `make book` and `make test`. The other targets are their steps.
# Every path here is relative to the repository; none depends on CASCADE_RESULTS.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

PY        := .venv/bin/python
STAMP     := .venv/.cascade-installed
MATHJAX   := book/_static/mathjax/tex-mml-chtml.js
DATA_DIR  := $(or $(CASCADE_DATA),/usr/share/datasets/fashion-mnist)
DATA_FILE := $(DATA_DIR)/train-images-idx3-ubyte.gz
TESTS     ?= tests/
# Processes computing the runs `make book` needs (one intra-op thread each); 2 was fastest on 2 cores.
WORKERS   ?= 2
# apt is usable as root or with passwordless sudo; empty otherwise.
APT := $(shell if [ "$$(id -u)" = 0 ]; then echo apt-get; \
	elif sudo -n true 2>/dev/null; then echo "sudo -n apt-get"; fi)

.PHONY: venv data mathjax browser book test notebooks bench clean

venv: $(STAMP)

# The stamp is newer than both dependency files once the venv matches them, so reruns are no-ops.
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q -e . --no-deps
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

# apt_install PACKAGE: install a Debian package, refreshing the package lists only when needed.
define apt_install
DEBIAN_FRONTEND=noninteractive $(APT) install -y -q --no-install-recommends $(1) \
	|| { $(APT) update -q && DEBIAN_FRONTEND=noninteractive $(APT) install -y -q --no-install-recommends $(1); }
endef

data:
	@if [ -f "$(DATA_FILE)" ]; then exit 0; fi; \
	if [ -n "$(CASCADE_DATA)" ]; then \
		echo "CASCADE_DATA=$(CASCADE_DATA) has no train-images-idx3-ubyte.gz;" \
			"point it at a folder with the four Fashion-MNIST .gz files"; exit 1; fi; \
	if [ -z "$(APT)" ]; then \
		echo "Fashion-MNIST missing: run 'apt-get install dataset-fashion-mnist' as root," \
			"or set CASCADE_DATA=/path/to/fashion-mnist, or load it with download=True when online"; exit 1; fi; \
	$(call apt_install,dataset-fashion-mnist)

# A local MathJax keeps the book offline; without npm the book falls back to the CDN (book/_ext/offline_assets.py).
mathjax: $(MATHJAX)

$(MATHJAX):
	@if ! command -v npm >/dev/null; then \
		echo "npm not found: the book will load MathJax from its CDN (install npm for an offline book)"; exit 0; fi; \
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	(cd "$$tmp" && npm pack mathjax@3 --silent >/dev/null); \
	rm -rf book/_static/mathjax && mkdir -p book/_static/mathjax; \
	tar -xzf "$$tmp"/mathjax-*.tgz -C book/_static/mathjax --strip-components=2 \
		package/es5/tex-mml-chtml.js package/es5/input package/es5/output/chtml \
		package/es5/ui package/es5/a11y package/es5/sre; \
	echo "MathJax $$(basename "$$tmp"/mathjax-*.tgz .tgz | cut -d- -f2) -> book/_static/mathjax"

browser:
	@if command -v chromium >/dev/null; then exit 0; fi; \
	if [ -z "$(APT)" ]; then \
		echo "Chromium missing (needed by the browser test): run 'apt-get install chromium' as root"; exit 1; fi; \
	$(call apt_install,chromium)

book: venv data mathjax
	$(PY) -m cascade book --profile paper --workers $(WORKERS)

# Tests use tiny tensors: one intra-op thread is faster and steadier on 2 shared cores. The unit tests compute
# smoke runs (the book test executes every notebook with the smoke profile) and run `cascade doctor` on the native
# and the AVX2 code paths. nbval then re-executes the committed notebooks against the committed paper store, where
# nothing may be computed (CASCADE_READ_ONLY): it checks that the book's published numbers regenerate exactly from
# the records, which holds on every CPU.
test: export OMP_NUM_THREADS := 1
test: venv data mathjax browser
	$(PY) -m pytest $(TESTS) -q
	@if ls notebooks/[0-9][0-9]_*.ipynb >/dev/null 2>&1; then \
		CASCADE_READ_ONLY=1 $(PY) -m pytest --nbval notebooks/ --nbval-current-env \
			--nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider -q; \
	else echo "no notebooks/NN_*.ipynb yet: nbval skipped"; fi

# Re-execute the committed notebooks in place against the committed paper store (after new paper records).
notebooks: export OMP_NUM_THREADS := 1
notebooks: venv
	CASCADE_READ_ONLY=1 .venv/bin/jupyter-execute --inplace notebooks/[0-9][0-9]_*.ipynb

bench: venv data
	$(PY) -m cascade bench

clean:
	rm -rf book/_build book/chapters book/_static/mathjax book/claims.md book/appendix.md book/_toc.yml book/data book/claims_forest.png
	find . -path ./.venv -prune -o -name __pycache__ -type d -exec rm -rf {} +
