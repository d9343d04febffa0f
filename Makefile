# The kit's entry points. Every Invoke task (`inv --list`) is a target of the same name running
# `inv <task> $(ARGS)` (tests/kit/test_tasks.py checks it); the others are venv, lint, test,
# serve-stop, bench, mutate, clean and help. `make <target>` creates the virtual environment first
# (.venv/, pinned by requirements.txt) when it is missing or stale.
PYTHON ?= python3
VENV := .venv
INV := $(VENV)/bin/inv
STAMP := $(VENV)/.installed
BACKEND ?= native
# The kit's build folder (kit/paths.py: $KIT_BUILD_DIR, default build/).
BUILD_DIR := $(or $(KIT_BUILD_DIR),build)
ARGS ?=

.PHONY: venv lint test bench-ab bench-stall reproduce train-svm train-mnist serve serve-stop test-svm test-mnist \
        image build-server publish canary promote rollback versions remove soak deploy bench mutate clean help

# `make help` prints every target that has a `## what it does` comment (a test checks that every
# target has one), so the list cannot fall behind the Makefile.
help:  ## this list
	@grep -E '^[a-z][a-z-]*:.*## ' $(firstword $(MAKEFILE_LIST)) | \
	  awk 'BEGIN { FS = ":.*## " } { printf "make %-14s %s\n", $$1, $$2 }'
	@echo "BACKEND=native|docker|binary selects the serving backend; ARGS='...' passes task options"
	@echo "(make <task> runs .venv/bin/inv <task> \$$ARGS; .venv/bin/inv <task> --help lists its options)"

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(None if sys.version_info[:2] == (3, 11) else "Python 3.11 is required, found " + sys.version.split()[0] + " ($(PYTHON)): make PYTHON=python3.11 ...")'
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)  ## create .venv (Python 3.11, requirements.txt) if missing or stale

lint: $(STAMP)  ## ruff (configured in pyproject.toml)
	$(VENV)/bin/ruff check .

# checkov, the manifest scanner the Kubernetes tests run over every overlay x storage, in a venv
# of its own: its pins (packaging 23.2, ...) clash with requirements.txt's. kit/k8s/scanners.py
# finds it there.
CHECKOV_VENV := $(BUILD_DIR)/tools/checkov-venv
$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	touch $@

# The Open Inference Protocol's third-party clients (tritonclient, kserve) that
# tests/server/test_oip_clients.py runs in child processes, in a venv of their own: tritonclient
# needs protobuf < 7, and both register the inference.* proto names pyserving's stubs do.
OIP_CLIENTS_VENV := $(BUILD_DIR)/tools/oip-clients-venv
$(OIP_CLIENTS_VENV)/.installed: requirements-oip-clients.txt
	test -x $(OIP_CLIENTS_VENV)/bin/python || $(PYTHON) -m venv $(OIP_CLIENTS_VENV)
	$(OIP_CLIENTS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-oip-clients.txt
	touch $@

# Debian's Bazel (bazel-bootstrap, 4.2.3) for the zlib repro's tests, which build protobuf 3.8.0 for
# real: installed here when missing and apt-get can (as root); otherwise those tests skip and say why.
test: lint $(CHECKOV_VENV)/.installed $(OIP_CLIENTS_VENV)/.installed  ## lint, then the whole test suite (skip reasons shown)
	@command -v bazel >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq bazel-bootstrap zlib1g-dev; } >/dev/null 2>&1 || \
	  echo "could not install bazel-bootstrap with apt-get (needs root and Debian's packages): the zlib repro tests will skip"
	$(VENV)/bin/python -m pytest -q -rs $(ARGS)

reproduce: $(STAMP)  ## train both models, serve them, query them over REST and gRPC, stop
	$(INV) reproduce --backend=$(BACKEND) $(ARGS)

train-svm: $(STAMP)  ## train the SVM, export build/models/svm/<version>
	$(INV) train-svm $(ARGS)

train-mnist: $(STAMP)  ## train MNIST, export build/models/mnist/<version>
	$(INV) train-mnist $(ARGS)

serve: $(STAMP)  ## serve build/models in the background (BACKEND=...)
	$(INV) serve --backend=$(BACKEND) $(ARGS)

serve-stop: $(STAMP)  ## stop the server that serve started
	$(INV) serve --stop $(ARGS)

test-svm: $(STAMP)  ## query the served SVM over REST
	$(INV) test-svm $(ARGS)

test-mnist: $(STAMP)  ## query the served MNIST model over gRPC
	$(INV) test-mnist $(ARGS)

image: $(STAMP)  ## build the development Docker image (ARGS=--target=pyserving: the server image)
	$(INV) image $(ARGS)

build-server: $(STAMP)  ## build tensorflow_model_server from source with Bazel in Docker
	$(INV) build-server $(ARGS)

# The one build step of the post that runs here: Debian's Bazel (apt-get install bazel-bootstrap).
.PHONY: zlib-repro
zlib-repro: $(STAMP)  ## protobuf 3.8.0 with Bazel: the @zlib error, then patched, built and run (~1 min)
	$(INV) zlib-repro $(ARGS)

publish: $(STAMP)  ## publish a SavedModel as the next version
	$(INV) publish $(ARGS)

canary: $(STAMP)  ## serve the newest version beside the stable one
	$(INV) canary $(ARGS)

promote: $(STAMP)  ## make the canary stable
	$(INV) promote $(ARGS)

rollback: $(STAMP)  ## drop the canary, or go back to the previous stable version
	$(INV) rollback $(ARGS)

versions: $(STAMP)  ## versions on disk, rollout roles, server state
	$(INV) versions $(ARGS)

remove: $(STAMP)  ## delete a version no label holds (not the only AVAILABLE one)
	$(INV) remove $(ARGS)

soak: $(STAMP)  ## REST+gRPC load while versions switch (own server)
	$(INV) soak $(ARGS)

deploy: $(STAMP)  ## render, check (and with ARGS=--apply apply) Kubernetes manifests: build/deploy/
	$(INV) deploy $(ARGS)

# The benchmark's load comes from wrk and h2load (Debian: wrk, nghttp2-client), installed here
# when missing and apt-get can; without them it falls back to the Python client and says so.
bench: $(STAMP)  ## serving benchmark, then the load-stall benchmark (~10 min)
	@command -v wrk >/dev/null && command -v h2load >/dev/null || \
	  apt-get install -y -qq wrk nghttp2-client >/dev/null 2>&1 || \
	  (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq wrk nghttp2-client >/dev/null 2>&1) || \
	  echo "could not install wrk and h2load (needs root and Debian's packages)"
	$(VENV)/bin/python bench/serving.py $(ARGS)
	$(VENV)/bin/python bench/load_stall.py

# Latency and memory of the served model while versions load and unload (bench/load_stall.py).
bench-stall: $(STAMP)  ## latency and memory while versions load and unload (~2 min)
	$(VENV)/bin/python bench/load_stall.py $(ARGS)

# Before/after: this tree's server against revision BASE's, interleaved (bench/ab.py).
bench-ab: $(STAMP)  ## before/after serving benchmark against BASE=<git revision> (~2 min a round)
	$(VENV)/bin/python bench/ab.py --base $(BASE) $(ARGS)

# Mutation testing (mutmut, configured in pyproject.toml [tool.mutmut]) of the modules where a
# silent bug hurts most, against their fast in-process unit tests; not part of `make test`. A full
# run starts from a fresh mutants/ (mutmut does not retest a mutant when only the tests changed)
# and is cut off after MUTATE_TIMEOUT seconds; ARGS='<mutant name or glob>' retests only those
# mutants and keeps the other results. Then kit/devtools/mutation_report.py prints the table per module.
# mutants/.venv: the kit's root is mutants/ there, and the kit renders with <root>/.venv/bin/kubectl.
MUTATE_TIMEOUT ?= 10800
MUTATE_CHILDREN ?= 2

mutate: $(STAMP)  ## mutation testing of core, codecs, kit/{steps,model_config}.py, kit/rollout/{plan,agreement}.py, kit/k8s/{target,cluster,deploy,manifest_checks}.py, app.py's flag wiring (~1 h)
	$(if $(ARGS),,rm -rf mutants)
	mkdir -p mutants && ln -sfn ../.venv mutants/.venv
	timeout -s INT -k 60 $(MUTATE_TIMEOUT) $(VENV)/bin/mutmut run --max-children $(MUTATE_CHILDREN) $(ARGS); \
	  status=$$?; $(VENV)/bin/python -m kit.devtools.mutation_report; exit $$status

# A server `inv serve` started is stopped first, by its pid: removing build/ would lose its record.
clean:  ## remove build/
	@if [ -x $(INV) ] && [ -f "$(BUILD_DIR)/server.json" ]; then $(INV) serve --stop; fi
	rm -rf "$(BUILD_DIR)"
