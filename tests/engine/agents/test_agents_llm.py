"""LLMAgent through litellm's real client against the fake OpenAI-compatible server."""

from __future__ import annotations

import subprocess

import pytest
from pydantic import BaseModel

from tests.fakes.openai_server import Reply

from engine.agents import AgentError, AgentUnavailable, LLMAgent, OutputInvalid, ProviderError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # litellm's own pydantic use


class Verdict(BaseModel):
    approved: bool
    summary: str


def agent(server, model: str = "openai/fake-model", **kw) -> LLMAgent:
    kw.setdefault("retry_backoff", 0.001)
    kw.setdefault("timeout", 5)
    return LLMAgent(model, api_base=server.openai_base, api_key="sk-fake", **kw)


async def test_tool_loop_edits_files_in_a_git_repo(server, repo, events):
    server.push(
        Reply.tools(("read_file", {"path": "app.py"}), text="Reading first."),
        Reply.tools(("edit_file", {"path": "app.py", "search": '"hello"', "replace": '"hello, world"'}),
                    ("write_file", {"path": "docs/NOTES.md", "content": "greet() now says hello, world\n"})),
        Reply.tools(("run_shell", {"command": "git status --porcelain"})),
        Reply.say("Done: greet() returns hello, world."),
    )
    result = await agent(server).run("Make greet say hello, world", output=None, workdir=repo, emit=events)

    assert result.output == result.text == "Done: greet() returns hello, world."
    assert result.structured_mode == "none"
    assert (repo / "app.py").read_text() == 'def greet():\n    return "hello, world"\n'
    assert (repo / "docs/NOTES.md").exists()
    diff = subprocess.run(["git", "diff", "--stat"], cwd=repo, capture_output=True, text=True).stdout
    assert "app.py" in diff
    # the model saw each tool's result in the next request
    reqs = server.completions()
    assert len(reqs) == 4
    tool_msgs = [m for m in reqs[3].body["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in tool_msgs][0].startswith('def greet():')
    assert "M app.py" in tool_msgs[-1]["content"] and "?? docs/" in tool_msgs[-1]["content"]
    assert reqs[0].body["stream"] is True and reqs[0].headers["authorization"] == "Bearer sk-fake"
    assert {t["function"]["name"] for t in reqs[0].body["tools"]} >= {"read_file", "edit_file", "run_shell"}


async def test_event_stream_order(server, tmp_path, events):
    server.push(Reply.tools(("run_shell", {"command": "echo hi"}), text="Let me check."),
                Reply.say("All good here."))
    await agent(server).run("check", output=None, workdir=tmp_path, emit=events)
    assert events.kinds() == ["token", "message", "tool_call", "shell_output", "tool_result", "token", "message"]
    assert events.text("token") == "Let me check.All good here."
    call = next(e for e in events if e.kind == "tool_call")
    assert call.data["name"] == "run_shell" and call.data["arguments"] == {"command": "echo hi"}
    assert next(e for e in events if e.kind == "tool_result").data["ok"] is True
    assert {e.agent for e in events} == {"openai/fake-model"}


async def test_tool_errors_go_back_to_the_model(server, tmp_path, events):
    server.push(Reply.tools(("read_file", {"path": "../../etc/passwd"})), Reply.say("ok, I will stay inside"))
    result = await agent(server).run("x", output=None, workdir=tmp_path, emit=events)
    assert result.text == "ok, I will stay inside"
    tool_msg = [m for m in server.completions()[1].body["messages"] if m["role"] == "tool"][0]
    assert "outside the working directory" in tool_msg["content"]
    assert next(e for e in events if e.kind == "tool_result").data["ok"] is False


async def test_invalid_json_corrected_after_feedback(server, tmp_path, events):
    server.push(Reply.say("Sure! Here you go: {approved: yes}"),
                Reply.say('{"approved": "maybe", "summary": "x"}'),
                Reply.say('```json\n{"approved": true, "summary": "looks fine"}\n```'))
    result = await agent(server).run("review", output=Verdict, workdir=tmp_path, emit=events)
    assert result.output == Verdict(approved=True, summary="looks fine")
    assert result.attempts == 3 and result.structured_mode == "prompt_schema"
    reqs = server.completions()
    assert "JSON schema" in reqs[0].body["messages"][-1]["content"]  # schema put in the prompt
    feedback = reqs[2].body["messages"][-1]
    assert feedback["role"] == "user" and "approved" in feedback["content"] and "valid boolean" in feedback["content"]
    assert [e.data["attempt"] for e in events if e.kind == "retry"] == [1, 2]


async def test_still_invalid_raises_output_invalid(server, tmp_path, events):
    for _ in range(4):
        server.push(Reply.say('{"approved": true}'))
    with pytest.raises(OutputInvalid) as err:
        await agent(server, max_validation_retries=3).run("review", output=Verdict, workdir=tmp_path, emit=events)
    assert "after 4 attempts" in str(err.value) and "summary" in err.value.errors
    assert "\n" not in str(err.value)
    assert len(server.completions()) == 4


async def test_native_json_schema_mode(server, tmp_path, events):
    server.push(Reply.say('{"approved": false, "summary": "needs tests"}'))
    result = await agent(server, structured_mode="native_json_schema").run(
        "review", output=Verdict, workdir=tmp_path, emit=events)
    assert result.structured_mode == "native_json_schema" and result.output.approved is False
    body = server.completions()[0].body
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"]["required"] == ["approved", "summary"]


async def test_auto_mode_uses_litellm_capabilities(server, tmp_path, events):
    server.push(Reply.say('{"approved": true, "summary": "ok"}'))
    result = await agent(server, model="openai/gpt-4o-mini").run("r", output=Verdict, workdir=tmp_path, emit=events)
    assert result.structured_mode == "native_json_schema"  # litellm says gpt-4o-mini supports it


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_provider_errors_retried_then_succeed(server, tmp_path, events, status):
    server.push(Reply.error(status), Reply.error(status), Reply.say("recovered"))
    result = await agent(server).run("x", output=None, workdir=tmp_path, emit=events)
    assert result.text == "recovered"
    retries = [e for e in events if e.kind == "retry"]
    assert [e.data["status"] for e in retries] == [status, status]
    assert retries[1].data["delay"] == 2 * retries[0].data["delay"]  # exponential backoff
    assert len(server.completions()) == 3


async def test_provider_errors_exhausted_give_clear_failure(server, tmp_path, events):
    for _ in range(3):
        server.push(Reply.error(429))
    with pytest.raises(ProviderError) as err:
        await agent(server, max_provider_retries=2).run("x", output=None, workdir=tmp_path, emit=events)
    msg = str(err.value)
    assert "failed 3 times" in msg and "429" in msg and "\n" not in msg
    assert len(server.completions()) == 3


async def test_timeout_retried(server, tmp_path, events):
    server.push(Reply.slow(3.0), Reply.say("fast now"))
    result = await agent(server, timeout=0.3).run("x", output=None, workdir=tmp_path, emit=events)
    assert result.text == "fast now"
    assert [e.data["reason"] for e in events if e.kind == "retry"] == ["provider"]


async def test_bad_request_not_retried(server, tmp_path, events):
    server.push(Reply.error(400, text="bad tool schema"))
    with pytest.raises(AgentError) as err:
        await agent(server).run("x", output=None, workdir=tmp_path, emit=events)
    assert "refused the request" in str(err.value) and "bad tool schema" in str(err.value)
    assert len(server.completions()) == 1


async def test_auth_error_is_unavailable(server, tmp_path, events):
    server.push(Reply.error(401, text="invalid api key"))
    with pytest.raises(AgentUnavailable):
        await agent(server).run("x", output=None, workdir=tmp_path, emit=events)


async def test_usage_and_cost_recorded(server, tmp_path, events):
    server.push(Reply.tools(("list_dir", {}), input_tokens=1000, output_tokens=100),
                Reply.say('{"approved": true, "summary": "fine"}', input_tokens=2000, output_tokens=50))
    result = await agent(server, model="openai/gpt-4o-mini", structured_mode="prompt_schema").run(
        "r", output=Verdict, workdir=tmp_path, emit=events)
    u = result.usage
    assert (u.input_tokens, u.output_tokens) == (3000, 150)
    assert u.cost_usd > 0 and u.model == "openai/gpt-4o-mini" and u.agent == "openai/gpt-4o-mini"
    assert u.duration_s > 0


async def test_unknown_price_costs_zero(server, tmp_path, events):
    server.push(Reply.say("hi"))
    result = await agent(server).run("x", output=None, workdir=tmp_path, emit=events)
    assert result.usage.cost_usd == 0.0 and result.usage.output_tokens == 7


async def test_turn_limit(server, tmp_path, events):
    for _ in range(3):
        server.push(Reply.tools(("list_dir", {})))
    with pytest.raises(AgentError, match="no final answer after 2 turns"):
        await agent(server, max_turns=2).run("x", output=None, workdir=tmp_path, emit=events)


async def test_run_tools_override_and_no_tools(server, tmp_path, events):
    server.push(Reply.say("plain"))
    await agent(server, tools=[]).run("x", output=None, workdir=tmp_path, emit=events)
    assert "tools" not in server.completions()[0].body


def test_available_needs_a_key(clean_env):
    assert LLMAgent("anthropic/claude-sonnet-4-5").available() == (False, "ANTHROPIC_API_KEY is not set")
    clean_env.setenv("ANTHROPIC_API_KEY", "x")
    assert LLMAgent("anthropic/claude-sonnet-4-5").available() == (True, "")
    assert LLMAgent("openai/x", api_key_env="MY_KEY").available() == (False, "MY_KEY is not set")
    assert LLMAgent("openai/local", api_base="http://127.0.0.1:1/v1").available()[0]


async def test_unavailable_run_fails_fast(clean_env, tmp_path, events):
    with pytest.raises(AgentUnavailable, match="OPENAI_API_KEY is not set"):
        await LLMAgent("openai/gpt-4.1").run("x", output=None, workdir=tmp_path, emit=events)


async def test_anthropic_messages_api_through_litellm(server, tmp_path, events):
    """The same loop over litellm's Anthropic client, against the fake Messages API."""
    (tmp_path / "a.txt").write_text("content A")
    server.push(Reply.tools(("read_file", {"path": "a.txt"}), text="reading"), Reply.say('{"approved": true, '
                                                                                         '"summary": "A"}'))
    agent = LLMAgent("anthropic/claude-sonnet-4-5", api_base=server.url, api_key="sk-fake", retry_backoff=0.001)
    result = await agent.run("r", output=Verdict, workdir=tmp_path, emit=events)
    assert result.output == Verdict(approved=True, summary="A")
    assert result.usage.cost_usd > 0 and result.usage.input_tokens == 22
    reqs = server.completions()
    assert [r.path for r in reqs] == ["/v1/messages", "/v1/messages"] and reqs[0].headers["x-api-key"] == "sk-fake"
    tool_result = reqs[1].body["messages"][-1]["content"][0]
    assert tool_result["type"] == "tool_result" and tool_result["content"] == "content A"
    assert events.kinds() == ["token", "message", "tool_call", "tool_result", "token", "message"]


def test_network_is_blocked_in_tests():
    import socket

    with pytest.raises(OSError):
        socket.create_connection(("203.0.113.1", 443), timeout=1)
