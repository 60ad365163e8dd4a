# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench screenshots agent-clis system-deps clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/smithers

test: $(STAMP) system-deps
	$(PY) -m pytest -q $(PYTEST_ARGS)

# System programs the tests use (strace, PostgreSQL's server...), from Debian's packages when missing.
system-deps:
	@./scripts/system-deps.sh

bench: $(STAMP)
	$(PY) -m bench

screenshots: $(STAMP)
	$(PY) -m smithers_tui.screenshots screenshots

# The coding-agent CLIs, installed into a project-local folder (tools/, git-ignored).
agent-clis:
	mkdir -p tools
	npm install --prefix tools --no-audit --no-fund --loglevel=error \
		@anthropic-ai/claude-code @openai/codex @google/gemini-cli

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
