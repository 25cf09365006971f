# The two commands of the README:   make book   and   make test
# Both create the environment first (.venv, torch 2.13.0 before anything else).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv zoo book notebooks html test check-book browser-deps clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, on its own: a CPU build; an open range would pull a multi-GB CUDA build
	$(BIN)/python -m pip install torch==2.13.0
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install -e .
	touch $(STAMP)

venv: $(STAMP)

zoo: venv                      ## train (or find cached) the embedded-default victims
	$(BIN)/python -m mia_utils.zoo build

notebooks: zoo                 ## execute every chapter with papermill, no book build
	$(BIN)/python -m mia_utils.nbrun book --no-build

book: zoo                      ## execute every chapter, then build _build/html (warnings are errors)
	$(BIN)/python -m mia_utils.nbrun book

html: venv                     ## rebuild the HTML from already executed notebooks
	$(BIN)/jupyter-book build . -W -n --keep-going

test: venv                     ## unit tests and papermill smoke runs of every chapter
	$(BIN)/python -m pytest -m "not browser"

browser-deps:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

check-book: venv browser-deps  ## open the built book in headless Chromium
	$(BIN)/python -m pytest -m browser

clean:
	rm -rf _build results notebooks/*.ipynb book/*.ipynb
