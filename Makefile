# The kit's entry points. Every Invoke task (`inv --list`) is a target of the same name running
# `inv <task> $(ARGS)` (tests/kit/test_tasks.py checks it); the others are venv, lint, test,
# serve-stop, bench, mutate, clean and help. `make <target>` creates the virtual environment first
# (.venv/, pinned by requirements.txt) when it is missing or stale.
PYTHON ?= python3
VENV := .venv
INV := $(VENV)/bin/inv
STAMP := $(VENV)/.installed
BACKEND ?= native
ARGS ?=

.PHONY: venv lint test reproduce train-svm train-mnist serve serve-stop test-svm test-mnist \
        image build-server publish canary promote rollback versions remove soak bench mutate clean help

help:
	@echo "make reproduce   train both models, serve them, query them over REST and gRPC (offline, native backend)"
	@echo "make test        lint, then run the test suite"
	@echo "make lint        ruff (configured in pyproject.toml)"
	@echo "make train-svm | train-mnist | serve | serve-stop | test-svm | test-mnist | image | build-server | bench"
	@echo "make publish | canary | promote | rollback | versions | remove | soak    update served models online"
	@echo "make mutate      mutation testing of pyserving/core, pyserving/codecs, kit/steps.py, kit/rollout.py (~20 min)"
	@echo "BACKEND=native|docker|binary selects the serving backend; ARGS='...' passes task options"

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version'
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(VENV)/bin/python -m pytest -q $(ARGS)

reproduce: $(STAMP)
	$(INV) reproduce --backend=$(BACKEND) $(ARGS)

train-svm: $(STAMP)
	$(INV) train-svm $(ARGS)

train-mnist: $(STAMP)
	$(INV) train-mnist $(ARGS)

serve: $(STAMP)
	$(INV) serve --backend=$(BACKEND) $(ARGS)

serve-stop: $(STAMP)
	$(INV) serve --stop $(ARGS)

test-svm: $(STAMP)
	$(INV) test-svm $(ARGS)

test-mnist: $(STAMP)
	$(INV) test-mnist $(ARGS)

image: $(STAMP)
	$(INV) image $(ARGS)

build-server: $(STAMP)
	$(INV) build-server $(ARGS)

publish: $(STAMP)
	$(INV) publish $(ARGS)

canary: $(STAMP)
	$(INV) canary $(ARGS)

promote: $(STAMP)
	$(INV) promote $(ARGS)

rollback: $(STAMP)
	$(INV) rollback $(ARGS)

versions: $(STAMP)
	$(INV) versions $(ARGS)

remove: $(STAMP)
	$(INV) remove $(ARGS)

soak: $(STAMP)
	$(INV) soak $(ARGS)

# The benchmark's load comes from wrk and h2load (Debian: wrk, nghttp2-client), installed here
# when missing and apt-get can; without them it falls back to the Python client and says so.
bench: $(STAMP)
	@command -v wrk >/dev/null && command -v h2load >/dev/null || \
	  apt-get install -y -qq wrk nghttp2-client >/dev/null 2>&1 || \
	  (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq wrk nghttp2-client >/dev/null 2>&1) || \
	  echo "could not install wrk and h2load (needs root and Debian's packages)"
	$(VENV)/bin/python bench/serving.py $(ARGS)

# Mutation testing (mutmut, configured in pyproject.toml [tool.mutmut]) of the modules where a
# silent bug hurts most, against their fast in-process unit tests; not part of `make test`. A full
# run starts from a fresh mutants/ (mutmut does not retest a mutant when only the tests changed)
# and is cut off after MUTATE_TIMEOUT seconds; ARGS='<mutant name or glob>' retests only those
# mutants and keeps the other results. Then kit/mutation_report.py prints the table per module.
MUTATE_TIMEOUT ?= 1800
MUTATE_CHILDREN ?= 2

mutate: $(STAMP)
	$(if $(ARGS),,rm -rf mutants)
	timeout -s INT -k 60 $(MUTATE_TIMEOUT) $(VENV)/bin/mutmut run --max-children $(MUTATE_CHILDREN) $(ARGS); \
	  status=$$?; $(VENV)/bin/python -m kit.mutation_report; exit $$status

clean:
	rm -rf build
