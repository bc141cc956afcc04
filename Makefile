# mtk: two commands do everything on a fresh machine with Python 3.11 and pip.
#   make reproduce   data, training, comparison, figures on the embedded default (SynthVOCA)
#   make test        unit tests + every notebook in smoke mode (one pytest run)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.mtk-installed

.PHONY: install test test-fast reproduce reproduce-all data strip clean browser validator

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned to the CPU wheel the kit is tested with (a loose pin pulls a multi-GB CUDA build)
	$(PY) -m pip install "torch==2.13.0"
	$(PY) -m pip install -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	HF_HUB_OFFLINE=1 MTK_SMOKE=1 $(PY) -m pytest

# Debian's Chromium for tests/test_browser.py (Playwright drives it; `playwright install` downloads are not used)
browser:
	@command -v chromium >/dev/null || { test "$$(id -u)" = 0 && apt-get install -y -q chromium >/dev/null || \
	  { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; } || \
	  echo "could not install chromium (needs root and Debian's apt); the browser tests will skip"

# The Khronos glTF validator (npm) for tests/test_export.py: node from Debian, the package from the npm registry
GLTF_VALIDATOR := .cache/gltf-validator
validator:
	@command -v npm >/dev/null || { test "$$(id -u)" = 0 && apt-get install -y -q nodejs npm >/dev/null; } || true
	@test -d $(GLTF_VALIDATOR)/node_modules/gltf-validator || npm install -q --no-audit --no-fund --prefix $(GLTF_VALIDATOR) \
	  gltf-validator@2.0.0-dev.3.10 >/dev/null || echo "could not install the glTF validator (needs npm); its check will skip"

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 MTK_SMOKE=1 $(PY) -m pytest tests

# DEVICE=cuda (or cpu, mps, cuda:1) trains the notebooks' models there; default auto: a CUDA GPU if torch sees one
reproduce: $(STAMP)
	$(PY) -m mtk reproduce $(if $(DEVICE),--device $(DEVICE))

# every notebook, the sweeps (05 ablations, 08 speaker count) too: every committed figure
reproduce-all: $(STAMP)
	$(PY) -m mtk reproduce --all $(if $(DEVICE),--device $(DEVICE))

data: $(STAMP)
	$(PY) -m mtk data

strip:
	$(PY) -m mtk strip-notebooks notebooks/*.ipynb

clean:
	rm -rf runs/smoke .pytest_cache
