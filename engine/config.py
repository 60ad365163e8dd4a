"""Settings: `.smithers/config.toml` under the project, overridden by `SMITHERS_*` env vars.

    [agents.default]            # roles planner / implementer / reviewer fall back to default
    model = "anthropic/claude-sonnet-4-5"
    [agents.reviewer]
    kind = "claude-code"
    [agents.careful]
    fallback = ["claude-code", "default"]
    [engine]
    max_concurrency = 4
    durability = "full"         # or "normal": faster commits, the last ones may be lost on power loss
    [sandbox]                   # the OS sandbox of run_shell and CLI agents (engine/sandbox.py)
    mode = "auto"               # "bwrap" to require it, "off" to never use it
    env = ["CARGO_HOME"]        # variables tools get besides PATH, HOME, LANG, TERM...
    secrets = ["MY_DB_PASSWORD"]  # values to redact everywhere (secret-named variables always are)
    [keys]
    quit = "ctrl+q"

Env examples: SMITHERS_AGENT_OVERRIDE=demo, SMITHERS_AGENTS__DEFAULT__MODEL=openai/gpt-4.1,
SMITHERS_ENGINE__MAX_CONCURRENCY=8.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import tomllib

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from engine.agents.base import Agent, AgentUnavailable, FallbackAgent
from engine.agents.cli import local_bin_dirs
from engine.agents.clis import CLI_AGENTS
from engine.agents.demo import DemoAgent
from engine.agents.llm import LLMAgent, provider_of
from engine import secrets

AgentKind = Literal["litellm", "claude-code", "codex", "gemini", "aider", "opencode", "pi", "demo"]
ROLES = ("planner", "implementer", "reviewer")

# With no configuration, `default` uses the first provider whose key is in the environment.
ENV_DEFAULTS: list[tuple[str, str]] = [
    ("ANTHROPIC_API_KEY", "anthropic/claude-sonnet-4-5"),
    ("OPENAI_API_KEY", "openai/gpt-4.1"),
    ("GEMINI_API_KEY", "gemini/gemini-2.5-pro"),
    ("GOOGLE_API_KEY", "gemini/gemini-2.5-pro"),
    ("OPENROUTER_API_KEY", "openrouter/anthropic/claude-sonnet-4.5"),
    ("DEEPSEEK_API_KEY", "deepseek/deepseek-chat"),
    ("MISTRAL_API_KEY", "mistral/mistral-large-latest"),
    ("GROQ_API_KEY", "groq/llama-3.3-70b-versatile"),
    ("XAI_API_KEY", "xai/grok-4"),
]
# built-in names usable without a [agents.NAME] table
BUILTIN_ALIASES = {"claude-code": "claude-code", "claude": "claude-code", "codex": "codex", "gemini": "gemini",
                   "gemini-cli": "gemini", "aider": "aider", "opencode": "opencode", "pi": "pi", "demo": "demo"}

NO_AGENT_HINT = ('no agent configured: set ANTHROPIC_API_KEY (or OPENAI_API_KEY / GEMINI_API_KEY), or add '
                 '[agents.default] model = "openai/gpt-4.1" to .smithers/config.toml, or run with --agent demo')


class ConfigError(ValueError):
    """The configuration file or SMITHERS_* variables are invalid (one-line message)."""


class AgentConfig(BaseModel):
    """One `[agents.NAME]` table."""

    model_config = ConfigDict(extra="forbid")
    kind: AgentKind = "litellm"
    model: str | None = None
    api_base: str | None = None
    api_key_env: str | None = None
    temperature: float | None = None
    max_turns: int = 30
    timeout: float | None = None  # per request (litellm) / per run (CLIs)
    idle_timeout: float | None = None  # CLIs: no output for this long -> killed
    max_validation_retries: int = 3
    max_provider_retries: int = 3
    shell_timeout: float = 120.0
    pass_secrets: bool = False  # give run_shell the *_API_KEY / *_TOKEN variables
    extra_args: list[str] = Field(default_factory=list)  # CLIs
    env: dict[str, str] = Field(default_factory=dict)  # CLIs
    env_passthrough: list[str] = Field(default_factory=list)  # variables its processes get besides the allowlist
    max_retries: int | None = None  # CLIs: the CLI's own retries of a failing endpoint (default 1)
    network: Literal["none", "endpoint", "full"] | None = None  # in the OS sandbox (default: CLIs reach
    # their endpoint when api_base is set, else the network; run_shell of litellm agents: none)
    sandbox: Literal["auto", "bwrap", "off"] | None = None  # overrides [sandbox] mode
    fallback: list[str] = Field(default_factory=list)  # a chain of other agent names instead


class EngineSettings(BaseModel):
    max_concurrency: int = 4
    durability: Literal["full", "normal"] = "full"  # full: every commit fsynced (survives an OS crash)


class SandboxSettings(BaseModel):
    """`[sandbox]`: the OS sandbox and the environment of tool and agent processes."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["auto", "bwrap", "off"] = "auto"
    env: list[str] = Field(default_factory=list)  # pass-through variable names
    secrets: list[str] = Field(default_factory=list)  # variable names whose values are redacted


class Settings(BaseSettings):
    """All settings; build with `load_settings(project_dir)`."""

    model_config = SettingsConfigDict(env_prefix="SMITHERS_", env_nested_delimiter="__", extra="ignore")
    agents: dict[str, AgentConfig] = Field(default_factory=dict)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    keys: dict[str, str] = Field(default_factory=dict)
    agent_override: str | None = None
    project_dir: Path | None = None

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("toml_file"):
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)


def config_path(project_dir: Path | str | None = None) -> Path:
    return Path(project_dir or Path.cwd()) / ".smithers" / "config.toml"


def load_settings(project_dir: Path | str | None = None, **overrides: Any) -> Settings:
    """Read `<project_dir>/.smithers/config.toml` (if any) and SMITHERS_* env vars (env wins)."""
    path = config_path(project_dir)
    cls: type[Settings] = Settings
    if path.is_file():
        cls = type("FileSettings", (Settings,), {"model_config": SettingsConfigDict(
            **{**Settings.model_config, "toml_file": str(path)})})
    try:
        settings = cls(project_dir=Path(project_dir) if project_dir else None, **overrides)
        secrets.register_env(settings.sandbox.secrets)
        return settings
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    except ValidationError as e:
        where = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()[:3])
        raise ConfigError(f"invalid settings in {path} or SMITHERS_* variables: {where}") from None


# -- resolution -----------------------------------------------------------------------------

def env_default_model() -> tuple[str, str] | None:
    """(env var, model) for the first provider key found in the environment."""
    for var, model in ENV_DEFAULTS:
        if os.environ.get(var):
            return var, model
    return None


def build_agent(name: str, cfg: AgentConfig, settings: Settings, _seen: tuple[str, ...] = ()) -> Agent:
    """Construct the agent one config table describes."""
    if cfg.fallback:
        return FallbackAgent([_resolve_name(n, settings, _seen + (name,)) for n in cfg.fallback], name=name)
    if cfg.kind == "demo":
        return DemoAgent(name=name)
    if cfg.api_key_env:
        secrets.register_env([cfg.api_key_env])
    for k, v in cfg.env.items():
        if secrets.is_secret_name(k):
            secrets.register(v, k)
    agent: Agent
    if cfg.kind == "litellm":
        if not cfg.model:
            raise AgentUnavailable(f'agent {name!r} has no model: add model = "provider/model" under [agents.{name}] '
                                   "in .smithers/config.toml")
        agent = LLMAgent(cfg.model, name=name, api_base=cfg.api_base, api_key_env=cfg.api_key_env,
                         temperature=cfg.temperature, max_turns=cfg.max_turns, timeout=cfg.timeout or 300.0,
                         max_validation_retries=cfg.max_validation_retries,
                         max_provider_retries=cfg.max_provider_retries, shell_timeout=cfg.shell_timeout,
                         pass_secrets=cfg.pass_secrets)
    else:
        agent = CLI_AGENTS[cfg.kind](name=name, model=cfg.model, timeout=cfg.timeout or 1800.0,
                                     idle_timeout=cfg.idle_timeout or 300.0, extra_args=cfg.extra_args,
                                     env=dict(cfg.env), max_validation_retries=cfg.max_validation_retries,
                                     search_dirs=local_bin_dirs(settings.project_dir), api_base=cfg.api_base,
                                     api_key_env=cfg.api_key_env, max_retries=cfg.max_retries,
                                     state_dir=state_dir(settings, name))
    agent.network = cfg.network
    agent.sandbox_mode = cfg.sandbox
    agent.passthrough = [*settings.sandbox.env, *cfg.env_passthrough]
    return agent


def _with_env(agent: Agent, settings: Settings) -> Agent:
    agent.passthrough = list(settings.sandbox.env)
    return agent


def state_dir(settings: Settings, name: str) -> Path:
    """Where a CLI agent keeps its own configuration and sessions: .smithers/agents/NAME/ (host-local)."""
    return Path(settings.project_dir or Path.cwd()).resolve() / ".smithers" / "agents" / name


def _resolve_name(name: str, settings: Settings, seen: tuple[str, ...] = ()) -> Agent:
    if name in seen:
        raise AgentUnavailable(f"agent {name!r} falls back to itself ({' -> '.join(seen + (name,))}); "
                               "fix the fallback lists in .smithers/config.toml")
    cfg = settings.agents.get(name)
    if cfg is not None:
        return build_agent(name, cfg, settings, seen)
    if name in BUILTIN_ALIASES:
        kind = BUILTIN_ALIASES[name]
        return build_agent(name, AgentConfig(kind=kind), settings, seen)
    if name in ROLES:
        return _resolve_name("default", settings, seen + (name,))
    if name == "default":
        found = env_default_model()
        if found is None:
            raise AgentUnavailable(NO_AGENT_HINT)
        return _with_env(LLMAgent(found[1], name="default"), settings)
    if "/" in name or provider_of(name):
        return _with_env(LLMAgent(name, name=name), settings)  # a litellm model string, e.g. "openai/gpt-4.1"
    raise AgentUnavailable(f"unknown agent {name!r}: add [agents.{name}] to .smithers/config.toml, "
                           "use a role (planner, implementer, reviewer, default) or a model like openai/gpt-4.1")


def resolve_agent(spec: Agent | str | list[Any] | None, settings: Settings | None = None) -> Agent:
    """An Agent from an Agent, a name (role, configured agent, builtin, model) or a list (fallback chain).

    `settings.agent_override` (the CLI's `--agent NAME`) replaces every spec.
    """
    settings = settings or load_settings()
    if settings.agent_override:
        return _resolve_name(settings.agent_override, settings)
    if spec is None:
        spec = "default"
    if isinstance(spec, Agent):
        return spec
    if isinstance(spec, (list, tuple)):
        agents = [resolve_agent(s, settings) for s in spec]
        return agents[0] if len(agents) == 1 else FallbackAgent(agents)
    return _resolve_name(str(spec), settings)


def _kind_of(agent: Agent) -> str:
    if isinstance(agent, FallbackAgent):
        return "fallback"
    if isinstance(agent, DemoAgent):
        return "demo"
    for kind, cls in CLI_AGENTS.items():
        if isinstance(agent, cls):
            return kind
    return "litellm" if isinstance(agent, LLMAgent) else type(agent).__name__


def list_agents(settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every known agent with (name, kind, model, usable, why): for `smithers agents --json`."""
    from engine.sandbox import describe

    settings = settings or load_settings()
    sandbox_line = describe() if settings.sandbox.mode != "off" else "OS sandbox: off ([sandbox] mode = \"off\")"
    names = list(dict.fromkeys(["default", *ROLES, *settings.agents, *CLI_AGENTS, "demo"]))
    rows = []
    for name in names:
        cfg = settings.agents.get(name)
        kind = cfg.kind if cfg else BUILTIN_ALIASES.get(name, "litellm")
        row: dict[str, Any] = {"name": name, "kind": kind, "model": cfg.model if cfg else None}
        if name in ROLES and cfg is None:
            row["uses"] = "default"
        try:
            agent = _resolve_name(name, settings)
            ok, why = agent.available()
            row["model"] = row["model"] or getattr(agent, "model", None)
            row["kind"] = _kind_of(agent)
            if isinstance(agent, FallbackAgent):
                row["fallback"] = [a.name for a in agent.agents]
        except AgentUnavailable as e:
            ok, why = False, str(e)
        row.update(usable=ok, why=why, sandbox=sandbox_line)
        rows.append(row)
    return rows

