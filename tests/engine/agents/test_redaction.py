"""Issue 9 item 9 end to end: a litellm agent (the real client, a scripted endpoint) runs shell and
file tools that reach for the engine's keys; nothing stored or printed holds a key's value."""

from __future__ import annotations

import json
import textwrap

from tests.fakes.openai_server import Reply
from tests.support import clean_env

KEY = "sk-proj-REALLOOKINGKEY-0123456789abcdef"
PAT = "ghp_PERSONALACCESS0123456789"


def test_keys_never_reach_the_database_or_the_terminal(tmp_path, server, smithers):
    (tmp_path / ".smithers").mkdir()
    (tmp_path / ".smithers" / "config.toml").write_text(textwrap.dedent(f"""
        [agents.default]
        model = "openai/fake-model"
        api_base = "{server.openai_base}"
        api_key_env = "OPENAI_API_KEY"
        max_provider_retries = 0
    """))
    (tmp_path / "leak.txt").write_text(f"copied by mistake: {KEY} and {PAT}\n")
    (tmp_path / "wf.py").write_text(textwrap.dedent("""
        from pydantic import BaseModel
        from engine import Sequence, Task, workflow

        class Found(BaseModel):
            found: str

        def fail(ctx):
            raise RuntimeError("boom with " + open("leak.txt").read().split()[3])

        @workflow(name="leaky")
        def leaky(ctx):
            return Sequence(Task("snoop", agent="default", prompt="look around", output=Found),
                            Task("crash", run=fail, retries=0))
    """))
    server.push(
        Reply.tools(("run_shell", {"command": "cat /proc/$PPID/environ | tr '\\\\0' '\\\\n'; env; cat leak.txt"}),
                    ("read_file", {"path": "leak.txt"})),
        Reply.say(json.dumps({"found": f"the key is {KEY}"})))
    env = clean_env(OPENAI_API_KEY=KEY, GH_PAT=PAT)
    run = smithers("run", "wf.py", "--run-id", "leak-1", env=env, timeout=120)
    assert run.returncode == 1 and "boom with" in run.stderr + run.stdout
    shown = [run.stdout, run.stderr]
    for args in (["logs", "leak-1"], ["logs", "leak-1", "--json"], ["show", "leak-1"], ["show", "leak-1", "--json"]):
        p = smithers(*args, env=env)
        shown += [p.stdout, p.stderr]
    files = [f for f in tmp_path.glob("smithers.db*") if f.is_file()]  # the database and its WAL
    everything = "\n".join(shown + [f.read_bytes().decode("utf-8", "replace") for f in files])
    assert KEY not in everything and PAT not in everything
    assert "[redacted:OPENAI_API_KEY]" in everything and "[redacted:GH_PAT]" in everything
    tool_result = server.completions()[1].body["messages"][-2:]  # what went back to the model
    assert KEY not in json.dumps(tool_result)
