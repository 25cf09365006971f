# The two commands of the README:   make book   and   make test
# Both create the environment first (.venv, torch 2.13.0 before anything else).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv data zoo assets book notebooks html test lint check-book browser-deps bench clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, on its own: a CPU build; an open range would pull a multi-GB CUDA build
	$(BIN)/python -m pip install torch==2.13.0
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install -e .
	touch $(STAMP)

venv: $(STAMP)

# Fashion-MNIST, the second embedded data set: Debian's package, installed when missing
FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
data:                          ## install Debian's dataset-fashion-mnist when it is missing
	@test -f $(FASHION) || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) \
	  || (echo "install Fashion-MNIST: sudo apt-get install dataset-fashion-mnist" && exit 1)

zoo: venv data                 ## train (or find cached) the embedded-default victims, two at a time
	$(BIN)/mia-book zoo build --jobs 2

# MathJax served by the book itself (npm, locked), so pages render formulas offline
MATHJAX := book/_static/mathjax/tex-mml-chtml.js
$(MATHJAX): book/package.json book/package-lock.json
	npm ci --prefix book --no-audit --no-fund --loglevel=error
	rm -rf book/_static/mathjax && mkdir -p book/_static/mathjax/input/tex
	cp book/node_modules/mathjax/es5/tex-mml-chtml.js book/_static/mathjax/
	cp -r book/node_modules/mathjax/es5/output book/node_modules/mathjax/es5/ui book/node_modules/mathjax/es5/a11y book/_static/mathjax/
	cp -r book/node_modules/mathjax/es5/input/tex/extensions book/_static/mathjax/input/tex/
	# the ipywidgets HTML manager and RequireJS, for widgets rendered without a kernel
	rm -rf book/_static/widgets && mkdir -p book/_static/widgets
	cp book/node_modules/requirejs/require.js book/_static/widgets/
	cp book/node_modules/@jupyter-widgets/html-manager/dist/embed-amd.js book/_static/widgets/
	# its icon fonts, where RequireJS (baseUrl: widgets/, see widgets-setup.js) looks for them
	mkdir -p book/_static/widgets/@jupyter-widgets/html-manager/dist
	cd book/node_modules/@jupyter-widgets/html-manager/dist && cp *.woff *.woff2 *.ttf *.eot *.svg ../../../../_static/widgets/@jupyter-widgets/html-manager/dist/
	touch $(MATHJAX)

assets: $(MATHJAX)

notebooks: zoo                 ## execute every chapter with papermill, no book build
	$(BIN)/mia-book book --no-build --jobs 2

book: zoo assets               ## execute every chapter, then build _build/html (warnings are errors)
	$(BIN)/mia-book book --jobs 2

html: venv assets              ## rebuild the HTML from already executed notebooks
	$(BIN)/jupyter-book build . -W -n --keep-going

test: venv data                ## unit tests and papermill smoke runs of every chapter
	$(BIN)/python -m pytest -m "not browser" -n 3 --durations=12

lint: venv                     ## ruff over the package, the tests and the benchmarks (line length 125)
	$(BIN)/ruff check mia_utils tests benchmarks book/_ext

browser-deps:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

check-book: venv browser-deps  ## open the built book in headless Chromium
	$(BIN)/python -m pytest -m browser

# CI's sizes (about 1.5 min on 2 cores, was 4): each benchmark run alone with its defaults gives the
# fuller figures (50,000 KDE vectors, 2,048 images per attack, 600 images per feature run).
bench: zoo                     ## print the benchmarks' figures (no pass/fail)
	$(BIN)/python benchmarks/bench_kde.py --train 20000
	$(BIN)/python benchmarks/bench_attacks.py --repeats 3 --n 512
	$(BIN)/python benchmarks/bench_features.py --stride 20 --images 300
	$(BIN)/python benchmarks/bench_stacked_training.py --k 4 --steps 3
	$(BIN)/python benchmarks/bench_privacy.py --steps 3
	$(BIN)/python benchmarks/bench_book.py

clean:
	rm -rf _build results notebooks/*.ipynb book/*.ipynb
