# The two commands a fresh clone needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test clean contracts install bench fuzz

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

## run the whole network on embedded PostgreSQL and the embedded broker
run: $(STAMP)
	$(PY) -m services.cli run

## run the test suite against the same embedded pieces: the unit tests once, every
## other test (e2e, browser) on each topology (R-NET-4); all runs go on after a failure
## and the target fails if any did. One topology: make test TOPOLOGIES=without-prefectures
TOPOLOGIES ?= with-prefectures without-prefectures
test: $(STAMP)
	@failed=""; \
	$(PY) -m pytest tests/unit || failed="$$failed unit"; \
	for topology in $(TOPOLOGIES); do \
	  echo "== e2e and browser tests, topology $$topology"; \
	  JUKINET_TEST_TOPOLOGY=$$topology $(PY) -m pytest tests --ignore=tests/unit || failed="$$failed $$topology"; \
	done; \
	if [ -n "$$failed" ]; then echo "failed:$$failed"; exit 1; fi

## regenerate contracts/openapi and contracts/schemas after a contract change
contracts: $(STAMP)
	$(PY) -m contracts.export

## delete local data (databases, keys, logs, traces)
clean: $(STAMP)
	$(PY) -m services.cli clean

## run every benchmark and write the figures to docs/benchmarks.md (never part of `make test`)
bench: $(STAMP)
	$(PY) -m bench

## fuzz every operation of every kind of service from its OpenAPI document, with more examples than `make test`
## (tests/e2e/test_fuzz.py), and print how many requests went to each service. FUZZ_EXAMPLES per operation, each
## sent with and without credentials; one topology (FUZZ_TOPOLOGY)
FUZZ_EXAMPLES ?= 50
FUZZ_TOPOLOGY ?= with-prefectures
fuzz: $(STAMP)
	@tmp=$$(mktemp -d "$${TMPDIR:-/tmp}/jukinet-fuzz-XXXXXX"); \
	JUKINET_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) JUKINET_TEST_TOPOLOGY=$(FUZZ_TOPOLOGY) $(PY) -m pytest tests/e2e/test_fuzz.py -q -s --basetemp=$$tmp; \
	rc=$$?; if [ $$rc -eq 0 ]; then rm -rf $$tmp; else echo "node logs kept under $$tmp"; fi; exit $$rc
