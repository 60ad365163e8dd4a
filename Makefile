# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench bytecode screenshots agent-clis system-deps clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# The project's own modules compiled ahead (an editable install has no bytecode until a first
# import writes it, and none at all where PYTHONDONTWRITEBYTECODE is set: each start then compiles
# them, ~0.3 s). Up to date, this takes ~0.1 s.
bytecode: $(STAMP)
	@$(PY) -m compileall -q engine smithers_tui workflows bench >/dev/null

run: bytecode
	$(VENV)/bin/smithers

# The suite runs on every core (pytest-xdist; `make test PYTEST_WORKERS=0` runs it in one process).
PYTEST_WORKERS ?= auto
test: $(STAMP) system-deps
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

# System programs the tests use (strace, PostgreSQL's server...), from Debian's packages when missing.
system-deps:
	@./scripts/system-deps.sh

bench: bytecode
	$(PY) -m bench

screenshots: $(STAMP)
	$(PY) -m smithers_tui.screenshots screenshots

# The coding-agent CLIs, installed into a project-local folder (tools/, git-ignored): the npm ones
# under tools/node_modules/.bin, Aider in its own virtual environment (tools/aider-venv) so its
# pinned dependencies never meet ours. Versions are pinned to what the real-binary tests verified.
AGENT_NPM := @anthropic-ai/claude-code@2.1.332 @openai/codex@0.171.0 @google/gemini-cli@0.61.0 \
	opencode-ai@1.18.33 @mariozechner/pi-coding-agent@0.73.1
AIDER := aider-chat==0.86.2
agent-clis:
	mkdir -p tools
	npm install --prefix tools --no-audit --no-fund --loglevel=error $(AGENT_NPM)
	@test -x tools/aider-venv/bin/python || $(PYTHON) -m venv tools/aider-venv
	tools/aider-venv/bin/python -m pip install --quiet $(AIDER)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
