"""LLMAgent: any litellm model, streamed, with a tool loop and validated structured output.

litellm is imported lazily (it takes seconds), with the bundled price map (no network fetch).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from engine.agents.base import (Agent, AgentError, AgentEvent, AgentResult, AgentUnavailable, Emit, OutputInvalid,
                                ProviderError, StructuredMode, Usage)
from engine.agents.structured import correction_message, schema_instructions, validate_answer
from engine.tools import DEFAULT_TOOLS, Tool, ToolContext, call_tool, openai_tool_specs

DEFAULT: Any = object()  # "use DEFAULT_TOOLS"

# provider prefix -> environment variables holding its key (first one found is used)
PROVIDER_KEYS: dict[str, tuple[str, ...]] = {
    "anthropic": ("ANTHROPIC_API_KEY",),
    "openai": ("OPENAI_API_KEY",),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
    "openrouter": ("OPENROUTER_API_KEY",),
    "deepseek": ("DEEPSEEK_API_KEY",),
    "groq": ("GROQ_API_KEY",),
    "mistral": ("MISTRAL_API_KEY",),
    "xai": ("XAI_API_KEY",),
    "together_ai": ("TOGETHERAI_API_KEY", "TOGETHER_API_KEY"),
    "fireworks_ai": ("FIREWORKS_AI_API_KEY", "FIREWORKS_API_KEY"),
}

SYSTEM_PROMPT = ("You are a careful software engineering agent. Use the tools to inspect and change files; "
                 "paths are relative to the working directory. Finish with a short answer.")

_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 529}


def load_litellm() -> Any:
    """Import litellm with its bundled price map and configs (no network fetches) and quiet logging."""
    for what in ("MODEL_COST_MAP", "ANTHROPIC_BETA_HEADERS", "BLOG_POSTS", "AUTOROUTER_PRESETS", "POLICY_TEMPLATES"):
        os.environ.setdefault(f"LITELLM_LOCAL_{what}", "True")
    import litellm

    litellm.suppress_debug_info = True
    return litellm


async def preload_litellm() -> Any:
    """Import litellm in a worker thread so a first import (seconds) doesn't stall the event loop."""
    if "litellm" in sys.modules and hasattr(sys.modules["litellm"], "acompletion"):
        return load_litellm()
    return await asyncio.to_thread(load_litellm)


def provider_of(model: str) -> str:
    if "/" in model:
        return model.split("/", 1)[0]
    if model.startswith(("gpt-", "o1", "o3", "o4", "chatgpt")):
        return "openai"
    if model.startswith("claude"):
        return "anthropic"
    return ""


def _one_line(e: BaseException, limit: int = 240) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class LLMAgent(Agent):
    """An agent over litellm.acompletion(stream=True) with a tool-call loop."""

    def __init__(self, model: str, *, api_base: str | None = None, api_key: str | None = None,
                 temperature: float | None = None, max_turns: int = 30, tools: list[Tool] | Any = DEFAULT,
                 name: str | None = None, max_validation_retries: int = 3, max_provider_retries: int = 3,
                 retry_backoff: float = 0.5, timeout: float = 300.0,
                 structured_mode: Literal["auto", "native_json_schema", "prompt_schema"] = "auto",
                 system_prompt: str | None = None, shell_timeout: float = 120.0, pass_secrets: bool = False,
                 api_key_env: str | None = None, extra_params: dict[str, Any] | None = None) -> None:
        self.model = model
        self.name = name or model
        self.api_base = api_base
        self.api_key_env = api_key_env
        self.api_key = api_key or (os.environ.get(api_key_env) if api_key_env else None)
        self.temperature = temperature
        self.max_turns = max_turns
        self.tools: list[Tool] = list(DEFAULT_TOOLS if tools is DEFAULT else (tools or []))
        self.max_validation_retries = max_validation_retries
        self.max_provider_retries = max_provider_retries
        self.retry_backoff = retry_backoff
        self.timeout = timeout
        self.structured_mode = structured_mode
        self.system_prompt = system_prompt if system_prompt is not None else SYSTEM_PROMPT
        self.shell_timeout = shell_timeout
        self.pass_secrets = pass_secrets
        self.extra_params = dict(extra_params or {})

    def available(self) -> tuple[bool, str]:
        if self.api_key:
            return True, ""
        if self.api_key_env:
            return False, f"{self.api_key_env} is not set"
        if self.api_base:
            return True, ""  # a local or self-hosted endpoint may need no key
        envs = PROVIDER_KEYS.get(provider_of(self.model))
        if envs and not any(os.environ.get(e) for e in envs):
            return False, f"{envs[0]} is not set"
        return True, ""

    # -- the run -----------------------------------------------------------------------
    async def run(self, prompt: str, *, output: type[BaseModel] | None, workdir: Path, emit: Emit,
                  tools: list[Tool] | None = None) -> AgentResult:
        try:
            return await self._run(prompt, output, Path(workdir), emit, tools)
        except AgentError as e:
            emit(AgentEvent(kind="error", text=str(e), agent=self.name, data={"type": type(e).__name__}))
            raise

    async def _run(self, prompt: str, output: type[BaseModel] | None, workdir: Path, emit: Emit,
                   tools: list[Tool] | None) -> AgentResult:
        ok, why = self.available()
        if not ok:
            raise AgentUnavailable(f"{self.name}: {why}")
        started = time.monotonic()
        litellm = await preload_litellm()
        tools = self.tools if tools is None else tools
        mode = self._mode(litellm, output)
        messages: list[dict[str, Any]] = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self.system_prompt})
        user = prompt + (schema_instructions(output) if output is not None and mode == "prompt_schema" else "")
        messages.append({"role": "user", "content": user})
        response_format = None
        if output is not None and mode == "native_json_schema":
            response_format = {"type": "json_schema", "json_schema": {
                "name": output.__name__, "schema": output.model_json_schema(), "strict": False}}
        usage = Usage(model=self.model, agent=self.name)
        turns = [self.max_turns]
        try:
            for attempts in range(1, self.max_validation_retries + 2):
                text, step = await self.converse(messages, workdir, emit, tools, response_format, turns)
                usage = usage + step
                if output is None:
                    return self._result(text, text, usage, started, "none", 1)
                value, errors = validate_answer(output, text)
                if value is not None:
                    return self._result(value, text, usage, started, mode, attempts)
                if attempts > self.max_validation_retries:
                    raise OutputInvalid(f"{self.name}: output still invalid after {attempts} attempts: "
                                        f"{' '.join(errors.split())[:300]}", errors=errors, text=text)
                emit(AgentEvent(kind="retry", agent=self.name, data={"reason": "validation", "attempt": attempts,
                                                                     "errors": errors},
                                text=f"output invalid; asking for a correction: {errors}"))
                messages.append({"role": "user", "content": correction_message(errors)})
            raise AssertionError("unreachable")
        finally:
            self.save_conversation(messages, workdir, tools)

    async def converse(self, messages: list[dict[str, Any]], workdir: Path, emit: Emit, tools: list[Tool] | None = None,
                       response_format: Any = None, turns: list[int] | None = None) -> tuple[str, Usage]:
        """Continue a conversation: call the model, run the tools it asks for, until it answers
        without tools. `messages` grows in place; returns (the answer, usage). `turns` is a shared
        budget of model calls (default: max_turns for this call)."""
        litellm = await preload_litellm()
        tools = self.tools if tools is None else tools
        budget = turns if turns is not None else [self.max_turns]
        ctx = ToolContext(Path(workdir), shell_timeout=self.shell_timeout, pass_secrets=self.pass_secrets,
                          passthrough=list(self.passthrough),
                          emit=lambda k, t, d: emit(AgentEvent(kind=k, text=t, data=d, agent=self.name)))
        usage = Usage(model=self.model, agent=self.name)
        while budget[0] > 0:
            budget[0] -= 1
            msg, step = await self._complete(litellm, messages, tools, response_format, emit)
            usage = usage + step
            text = msg.get("content") or ""
            if text:
                emit(AgentEvent(kind="message", text=text, agent=self.name))
            messages.append(msg)
            if not msg.get("tool_calls"):
                return text, usage
            for tc in msg["tool_calls"]:
                await self._call(tc, tools, ctx, messages, emit)
        raise AgentError(f"{self.name}: no final answer after {self.max_turns} turns; raise max_turns or split the task")

    def save_conversation(self, messages: list[dict[str, Any]], workdir: Path, tools: list[Tool]) -> None:
        """Keep the step's conversation (secrets redacted) host-locally, and note it as the step's
        session, so `H` in the app can continue it with the same tools."""
        from engine import procs
        from engine.secrets import redact_data

        scope = procs.current()
        if scope is None:
            return
        path = (Path(scope.workdir) / ".smithers" / "conversations" / scope.run_id
                / f"{scope.node_id}#{scope.iteration}.json")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"model": self.model, "agent": self.name, "tools": [t.name for t in tools],
                                        "messages": redact_data(messages)}))
        except OSError:
            return
        scope.note("session", {"id": str(path), "cli": "litellm", "agent": self.name, "workdir": str(workdir),
                               "tools": [t.name for t in tools]})

    def _result(self, output: Any, text: str, usage: Usage, started: float, mode: StructuredMode,
                attempts: int) -> AgentResult:
        usage = usage.model_copy(update={"duration_s": time.monotonic() - started})
        return AgentResult(output=output, text=text, usage=usage, structured_mode=mode, attempts=attempts)

    def _mode(self, litellm: Any, output: type[BaseModel] | None) -> StructuredMode:
        if output is None:
            return "none"
        if self.structured_mode != "auto":
            return self.structured_mode
        try:
            _, provider, _, _ = litellm.get_llm_provider(self.model)
            native = litellm.supports_response_schema(model=self.model, custom_llm_provider=provider)
        except Exception:
            native = False
        return "native_json_schema" if native else "prompt_schema"

    async def _call(self, tc: dict[str, Any], tools: list[Tool], ctx: ToolContext, messages: list[dict[str, Any]], emit: Emit) -> None:
        name, raw = tc["function"]["name"], tc["function"]["arguments"]
        try:
            shown: Any = json.loads(raw or "{}")
        except ValueError:
            shown = raw
        emit(AgentEvent(kind="tool_call", agent=self.name, text=f"{name} {raw[:300]}",
                        data={"id": tc["id"], "name": name, "arguments": shown}))
        ok, result = await call_tool(tools, name, raw, ctx)
        emit(AgentEvent(kind="tool_result", agent=self.name, text=result[:2000],
                        data={"id": tc["id"], "name": name, "ok": ok}))
        messages.append({"role": "tool", "tool_call_id": tc["id"], "name": name, "content": result})

    # -- one completion, with provider retries -------------------------------------------
    async def _complete(self, litellm: Any, messages: list[dict[str, Any]], tools: list[Tool], response_format: Any,
                        emit: Emit) -> tuple[dict[str, Any], Usage]:
        for attempt in range(self.max_provider_retries + 1):
            try:
                return await self._stream_once(litellm, messages, tools, response_format, emit)
            except Exception as e:  # litellm raises many kinds; sort them out below
                status, retryable = self._classify(litellm, e)
                if not retryable:
                    if status in (401, 403):
                        raise AgentUnavailable(f"{self.name}: the provider rejected the API key ({status}): "
                                               f"{_one_line(e, 160)}") from e
                    raise AgentError(f"{self.name}: the provider refused the request: {_one_line(e)}") from e
                if attempt == self.max_provider_retries:
                    raise ProviderError(f"{self.name}: provider failed {attempt + 1} times "
                                        f"({status or type(e).__name__}); last error: {_one_line(e, 200)}") from e
                delay = self.retry_backoff * (2 ** attempt)
                emit(AgentEvent(kind="retry", agent=self.name,
                                text=f"provider error ({status or type(e).__name__}); retrying in {delay:g}s",
                                data={"reason": "provider", "status": status, "attempt": attempt + 1, "delay": delay}))
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    @staticmethod
    def _classify(litellm: Any, e: Exception) -> tuple[int | None, bool]:
        status = getattr(e, "status_code", None)
        if isinstance(e, (asyncio.TimeoutError, ConnectionError)):
            return status, True
        timeouts = tuple(c for c in (getattr(litellm, "Timeout", None), getattr(litellm, "APIConnectionError", None))
                         if isinstance(c, type))
        if timeouts and isinstance(e, timeouts):
            return status, True
        if isinstance(status, int):
            return status, status in _RETRY_STATUS
        return status, False

    async def _stream_once(self, litellm: Any, messages: list[dict[str, Any]], tools: list[Tool], response_format: Any,
                           emit: Emit) -> tuple[dict[str, Any], Usage]:
        kwargs: dict[str, Any] = dict(model=self.model, messages=messages, stream=True,
                                      stream_options={"include_usage": True}, num_retries=0, max_retries=0,
                                      timeout=self.timeout, drop_params=True, **self.extra_params)
        if self.api_base:
            kwargs["api_base"] = self.api_base
        if self.api_key:
            kwargs["api_key"] = self.api_key
        if self.temperature is not None:
            kwargs["temperature"] = self.temperature
        if tools:
            kwargs["tools"] = openai_tool_specs(tools)
        if response_format is not None:
            kwargs["response_format"] = response_format
        stream = await litellm.acompletion(**kwargs)
        chunks = []
        async for chunk in stream:
            chunks.append(chunk)
            choices = getattr(chunk, "choices", None) or []
            piece = getattr(choices[0].delta, "content", None) if choices else None
            if piece:
                emit(AgentEvent(kind="token", text=piece, agent=self.name))
        if not chunks:
            raise ProviderError(f"{self.name}: the provider returned an empty stream")
        full = litellm.stream_chunk_builder(chunks, messages=messages)
        m = full.choices[0].message
        msg: dict[str, Any] = {"role": "assistant", "content": m.content or ""}
        calls = []
        for tc in getattr(m, "tool_calls", None) or []:
            calls.append({"id": tc.id or f"call_{uuid.uuid4().hex[:12]}", "type": "function",
                          "function": {"name": tc.function.name, "arguments": tc.function.arguments or "{}"}})
        if calls:
            msg["tool_calls"] = calls
        u = getattr(full, "usage", None)
        try:
            cost = float(litellm.completion_cost(completion_response=full, model=self.model) or 0.0)
        except Exception:
            cost = 0.0  # unknown model or price: don't crash over money
        return msg, Usage(input_tokens=int(getattr(u, "prompt_tokens", 0) or 0),
                          output_tokens=int(getattr(u, "completion_tokens", 0) or 0), cost_usd=cost,
                          model=self.model, agent=self.name)
