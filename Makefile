# The two README commands: `make demo` and `make test`. Both create .venv on first use.
VENV ?= .venv
STAMP := $(VENV)/.medlens-installed

.PHONY: demo test install bench

$(STAMP): pyproject.toml scripts/bootstrap.sh
	bash scripts/bootstrap.sh $(VENV)
	touch $@

install: $(STAMP)

# the demo writes ./medlens-demo afresh each time (it is the demo's own output folder)
demo: $(STAMP)
	rm -rf medlens-demo
	$(VENV)/bin/medlens demo --out medlens-demo

# pytest exit 5 (no test collected) counts as a failure.
test: $(STAMP)
	$(VENV)/bin/pytest; rc=$$?; [ $$rc -ne 5 ] || echo "pytest collected no tests" >&2; [ $$rc -eq 0 ]

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(VENV)/bin/python $$b || exit 1; done
