# The README's two commands. Both set up .venv themselves on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench setup notebooks

$(BIN)/attribution: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/attribution

setup: $(BIN)/attribution

# Generate nothing: runs the committed sample world on the embedded store.
demo: setup
	$(BIN)/attribution run fixtures/sample/snapshot --out runs/sample --store .attribution/store
	$(BIN)/python -m fixtures.evaluate runs/sample fixtures/sample

# Every test, including the real Neo4j (built with Maven on first use) and lint.
test: setup
	$(BIN)/ruff check attribution fixtures bench tests notebooks
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m bench.run_bench

# Start the development Neo4j, load and run the sample world into it, open the notebooks.
notebooks: setup
	$(BIN)/pip install --quiet jupyterlab
	eval "$$($(BIN)/attribution neo4j-dev start)" && \
	$(BIN)/attribution run fixtures/sample/snapshot --out runs/sample-neo4j && \
	$(BIN)/jupyter lab notebooks/
