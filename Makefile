# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("heard needs Python 3.11 or newer") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,keyring,postgres]'
	@# Byte-compile heard's own modules now (pip does it for the dependencies): every command
	@# starts from them, and where PYTHONDONTWRITEBYTECODE is set Python would compile them
	@# again at each start (about 0.1 s of every `heard sync`).
	$(BIN)/python -m compileall -q tui mail storage
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/heard demo $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/sync_bench.py
	$(BIN)/python bench/parse_bench.py
	$(BIN)/python bench/app_bench.py
	$(BIN)/python bench/send_bench.py
	$(BIN)/python bench/deadline_sim.py
	$(BIN)/python bench/idle_bench.py

clean:
	rm -rf $(VENV) build *.egg-info
