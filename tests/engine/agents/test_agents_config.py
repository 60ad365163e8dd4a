"""Settings from .smithers/config.toml + SMITHERS_* env, and agent resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.agents import (AgentUnavailable, ClaudeCodeAgent, DemoAgent, FallbackAgent, LLMAgent, ScriptedAgent)
from engine.config import list_agents, load_settings, resolve_agent


def write_config(project: Path, text: str) -> Path:
    (project / ".smithers").mkdir(exist_ok=True)
    path = project / ".smithers" / "config.toml"
    path.write_text(text)
    return path


def test_defaults_without_config(tmp_path, clean_env):
    s = load_settings(tmp_path)
    assert s.engine.max_concurrency == 4 and s.agents == {} and s.keys == {} and s.agent_override is None


def test_toml_and_env(tmp_path, clean_env):
    write_config(tmp_path, """
[engine]
max_concurrency = 2
[keys]
quit = "ctrl+q"
[agents.default]
model = "openai/gpt-4.1"
temperature = 0.2
[agents.reviewer]
kind = "claude-code"
model = "sonnet"
timeout = 600
""")
    clean_env.setenv("SMITHERS_ENGINE__MAX_CONCURRENCY", "8")
    clean_env.setenv("SMITHERS_AGENTS__DEFAULT__API_BASE", "http://127.0.0.1:9/v1")
    s = load_settings(tmp_path)
    assert s.engine.max_concurrency == 8  # env wins over the file
    assert s.keys == {"quit": "ctrl+q"}
    assert s.agents["default"].model == "openai/gpt-4.1"  # merged with the env's api_base
    assert s.agents["default"].api_base == "http://127.0.0.1:9/v1"
    assert s.agents["reviewer"].kind == "claude-code" and s.agents["reviewer"].timeout == 600


def test_roles_fall_back_to_default(tmp_path, clean_env):
    write_config(tmp_path, '[agents.default]\nmodel = "openai/gpt-4.1"\n[agents.reviewer]\nkind = "claude-code"\n')
    s = load_settings(tmp_path)
    planner = resolve_agent("planner", s)
    assert isinstance(planner, LLMAgent) and planner.model == "openai/gpt-4.1"
    assert isinstance(resolve_agent("implementer", s), LLMAgent)
    assert isinstance(resolve_agent("reviewer", s), ClaudeCodeAgent)


def test_default_from_environment_keys(tmp_path, clean_env):
    s = load_settings(tmp_path)
    clean_env.setenv("OPENAI_API_KEY", "sk-x")
    agent = resolve_agent("planner", s)
    assert isinstance(agent, LLMAgent) and agent.model.startswith("openai/") and agent.available() == (True, "")
    clean_env.setenv("ANTHROPIC_API_KEY", "sk-ant")
    assert resolve_agent("default", s).model.startswith("anthropic/")
    clean_env.delenv("ANTHROPIC_API_KEY")
    clean_env.delenv("OPENAI_API_KEY")
    clean_env.setenv("GEMINI_API_KEY", "g")
    assert resolve_agent(None, s).model.startswith("gemini/")


def test_no_key_gives_one_line_error(tmp_path, clean_env):
    with pytest.raises(AgentUnavailable) as err:
        resolve_agent("implementer", load_settings(tmp_path))
    msg = str(err.value)
    assert "\n" not in msg and "ANTHROPIC_API_KEY" in msg and "config.toml" in msg and "--agent demo" in msg


def test_override_forces_every_role(tmp_path, clean_env):
    s = load_settings(tmp_path, agent_override="demo")
    for spec in ("planner", "reviewer", ["a", "b"], ScriptedAgent([])):
        assert isinstance(resolve_agent(spec, s), DemoAgent)
    clean_env.setenv("SMITHERS_AGENT_OVERRIDE", "demo")
    assert isinstance(resolve_agent("default", load_settings(tmp_path)), DemoAgent)


def test_specs_agent_list_and_fallback_table(tmp_path, clean_env):
    write_config(tmp_path, '[agents.careful]\nfallback = ["claude-code", "demo"]\n'
                           '[agents.loop]\nfallback = ["loop"]\n')
    s = load_settings(tmp_path)
    scripted = ScriptedAgent([])
    assert resolve_agent(scripted, s) is scripted
    chain = resolve_agent(["demo", scripted], s)
    assert isinstance(chain, FallbackAgent) and [a.name for a in chain.agents] == ["demo", "scripted"]
    careful = resolve_agent("careful", s)
    assert isinstance(careful, FallbackAgent) and careful.available()[0]
    with pytest.raises(AgentUnavailable, match="falls back to itself"):
        resolve_agent("loop", s)
    with pytest.raises(AgentUnavailable, match="unknown agent 'nobody'"):
        resolve_agent("nobody", s)
    assert isinstance(resolve_agent("openai/gpt-4.1", s), LLMAgent)


def test_api_key_env(tmp_path, clean_env):
    write_config(tmp_path, '[agents.local]\nmodel = "openai/my-model"\napi_key_env = "MY_LLM_KEY"\n')
    s = load_settings(tmp_path)
    assert resolve_agent("local", s).available() == (False, "MY_LLM_KEY is not set")
    clean_env.setenv("MY_LLM_KEY", "k")
    agent = resolve_agent("local", s)
    assert agent.available() == (True, "") and agent.api_key == "k"


def test_cli_agent_missing_binary_is_one_line(tmp_path, clean_env):
    write_config(tmp_path, '[agents.cx]\nkind = "codex"\nmodel = "gpt-5"\n')
    clean_env.setenv("PATH", str(tmp_path / "empty"))
    clean_env.setattr("engine.agents.cli._ROOT", tmp_path)  # not the project's tools/ (CI installs codex there)
    ok, why = resolve_agent("cx", load_settings(tmp_path)).available()
    assert not ok and "\n" not in why and "npm install -g @openai/codex" in why and "make agent-clis" in why


def test_list_agents(tmp_path, clean_env):
    write_config(tmp_path, '[agents.default]\nmodel = "anthropic/claude-sonnet-4-5"\n')
    rows = {r["name"]: r for r in list_agents(load_settings(tmp_path))}
    assert {"default", "planner", "implementer", "reviewer", "claude-code", "codex", "gemini", "aider",
            "opencode", "pi", "demo"} <= set(rows)
    sandbox = rows["default"].pop("sandbox")
    assert sandbox.startswith("OS sandbox: ") and all(r["sandbox"] == sandbox for r in rows.values() if "sandbox" in r)
    assert rows["default"] == {"name": "default", "kind": "litellm", "model": "anthropic/claude-sonnet-4-5",
                               "usable": False, "why": "ANTHROPIC_API_KEY is not set"}
    assert rows["planner"]["uses"] == "default" and rows["planner"]["model"] == "anthropic/claude-sonnet-4-5"
    assert rows["demo"]["usable"] is True and rows["demo"]["kind"] == "demo"
    assert all(set(r) >= {"name", "kind", "model", "usable", "why"} for r in rows.values())


def test_bad_config_is_one_line(tmp_path, clean_env):
    from engine.config import ConfigError

    write_config(tmp_path, '[agents.default]\nmodle = "x"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(tmp_path)
    assert "agents.default.modle" in str(err.value) and "\n" not in str(err.value)
    write_config(tmp_path, '[agents.default\n')
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(tmp_path)
