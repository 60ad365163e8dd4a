"""Hijack from the app: `H` on an agent step of the run screen reopens its CLI session in the step's
worktree (the interactive program replaced by a stand-in that plays the person), and the person's
diff is recorded in the run's log."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from engine.agents.hijack import WRAPPER_VAR
from engine.store import Store
from smithers_tui.screens.run import RunScreen
from smithers_tui.widgets.step_tree import StepTree
from tests.support import clean_env
from tests.tui.helpers import make_app, ready, until

CLI = f"""#!{sys.executable}
import json, sys
sys.stdin.read()
for line in ({{"type": "system", "subtype": "init", "session_id": "sess-42"}},
             {{"type": "result", "result": "done", "session_id": "sess-42", "usage": {{}}}}):
    print(json.dumps(line), flush=True)
"""


async def test_h_hijacks_the_selected_step_and_records_the_diff(db: Path, project: Path, smithers, monkeypatch):
    bindir = project / "bin"
    bindir.mkdir()
    (bindir / "claude").write_text(CLI)
    (bindir / "claude").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    (project / ".smithers" / "config.toml").write_text('[agents.coder]\nkind = "claude-code"\n')
    (project / "hj.py").write_text(textwrap.dedent("""
        from engine import Task, Worktree, workflow

        @workflow(name="hj")
        def hj(ctx):
            return Worktree("wt", Task("edit", agent="coder", prompt="work", output=None), keep=True)
    """))
    (project / ".gitignore").write_text(".smithers/\n.worktrees/\nbin/\n")
    genv = {**clean_env(), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x.invalid",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x.invalid"}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "init"]):
        subprocess.run(["git", *args], cwd=project, check=True, env=genv, capture_output=True)
    r = smithers("run", "hj.py", "--run-id", "hj-app", db=db, cwd=project, env=clean_env(PATH=os.environ["PATH"]))
    assert r.returncode == 0, r.stderr

    seen = project / "stand-in.json"
    person = project / "person.py"
    person.write_text(f"import json, os, sys\njson.dump({{'argv': sys.argv[1:], 'cwd': os.getcwd()}}, "
                      f"open({str(seen)!r}, 'w'))\nopen('by-hand.txt', 'w').write('typed by a person\\n')\n")
    monkeypatch.setenv(WRAPPER_VAR, f"{sys.executable} {person}")

    app = make_app(db, project, agent_override=None)
    async with app.run_test(size=(120, 36)) as pilot:
        await ready(pilot, app)
        app.open_run("hj-app")
        await until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.loaded, "the run screen")
        assert app.screen.query_one(StepTree).select_key(("edit", 0))
        told = len(app.said)
        await pilot.press("H")
        await until(pilot, lambda: len(app.said) > told, "the hijack recorded and said")
        assert seen.exists()
        store = await Store.open(db)
        try:
            found = [e for e in await store.events("hj-app") if e.data.get("kind") == "hijack"]
        finally:
            await store.close()
    argv = json.loads(seen.read_text())
    assert argv["argv"][0].endswith("claude") and argv["argv"][1:3] == ["--resume", "sess-42"]
    assert "/.worktrees/" in argv["cwd"]
    assert found and found[0].node_id == "edit" and "+typed by a person" in found[0].data["data"]["diff"]


async def test_h_on_a_litellm_step_opens_a_chat_that_continues_it(db: Path, project: Path, smithers, monkeypatch):
    from textual.widgets import Input, RichLog

    from smithers_tui.hijack import ChatScreen
    from tests.fakes.openai_server import FakeLLMServer, Reply

    with FakeLLMServer() as server:
        (project / ".smithers" / "config.toml").write_text(textwrap.dedent(f"""
            [agents.default]
            model = "openai/fake-model"
            api_base = "{server.openai_base}"
            api_key_env = "SMITHERS_TEST_LLM_KEY"
            max_provider_retries = 0
        """))
        (project / "chat.py").write_text(textwrap.dedent("""
            from engine import Task, Worktree, workflow

            @workflow(name="chat")
            def chat(ctx):
                return Worktree("wt", Task("think", agent="default", prompt="Plan the change", output=None), keep=True)
        """))
        (project / ".gitignore").write_text(".smithers/\n.worktrees/\n")
        genv = {**clean_env(), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x.invalid",
                "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x.invalid"}
        for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "init"]):
            subprocess.run(["git", *args], cwd=project, check=True, env=genv, capture_output=True)
        monkeypatch.setenv("SMITHERS_TEST_LLM_KEY", "sk-fake-llm-key-0123456789")
        server.push(Reply.say("The plan: add notes.txt"))
        r = smithers("run", "chat.py", "--run-id", "chat-1", db=db, cwd=project,
                     env=clean_env(SMITHERS_TEST_LLM_KEY="sk-fake-llm-key-0123456789"))
        assert r.returncode == 0, r.stderr

        server.push(Reply.tools(("write_file", {"path": "notes.txt", "content": "from the chat\n"})),
                    Reply.say("Wrote notes.txt as you asked."))
        app = make_app(db, project, agent_override=None)
        async with app.run_test(size=(120, 36)) as pilot:
            await ready(pilot, app)
            app.open_run("chat-1")
            await until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.loaded, "the run screen")
            assert app.screen.query_one(StepTree).select_key(("think", 0))
            await pilot.press("H")
            chat = await until(pilot, lambda: isinstance(app.screen, ChatScreen) and app.screen, "the chat")
            assert any("The plan: add notes.txt" in str(line) for line in chat.query_one(RichLog).lines)
            chat.query_one(Input).value = "now write notes.txt"
            await pilot.press("enter")
            await until(pilot, lambda: any("as you asked" in str(line) for line in chat.query_one(RichLog).lines),
                        "the agent's answer")
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, ChatScreen), "the chat to close")
        sent = server.completions()[-2].body["messages"]
        assert [m["role"] for m in sent if m["role"] in ("user", "assistant")][-3:] == ["user", "assistant", "user"]
        assert sent[-1]["content"] == "now write notes.txt" and {t["function"]["name"] for t in
                                                                  server.completions()[-2].body["tools"]} >= {"write_file"}
    store = await Store.open(db)
    try:
        events = [e for e in await store.events("chat-1") if e.data.get("kind") == "hijack"]
    finally:
        await store.close()
    assert events and "+from the chat" in events[0].data["data"]["diff"]
