"""The tool sandbox: every path stays inside the working directory; shell is bounded."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

import engine.tools as tools
from engine.sandbox import Policy
from engine.tools import DEFAULT_TOOLS, ToolContext, call_tool, openai_tool_specs


@pytest.fixture
def wd(tmp_path: Path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    (d / "notes.txt").write_text("alpha\nbeta\ngamma\n")
    (d / "src").mkdir()
    (d / "src" / "mod.py").write_text("x = 1\ny = 2\n")
    return d


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    f = tmp_path / "secret.txt"
    f.write_text("TOP SECRET")
    return f


async def call(wd: Path, name: str, **args) -> tuple[bool, str]:
    return await call_tool(DEFAULT_TOOLS, name, args, ToolContext(wd))


def test_specs_are_openai_functions():
    specs = openai_tool_specs(DEFAULT_TOOLS)
    assert {s["function"]["name"] for s in specs} == {"read_file", "write_file", "edit_file", "list_dir", "grep",
                                                      "run_shell"}
    assert all(s["type"] == "function" and s["function"]["parameters"]["type"] == "object" for s in specs)


# -- paths -----------------------------------------------------------------------------------

async def test_read_inside(wd):
    ok, out = await call(wd, "read_file", path="notes.txt")
    assert ok and out.startswith("alpha\nbeta")


async def test_dotdot_refused(wd, outside):
    ok, out = await call(wd, "read_file", path="../secret.txt")
    assert not ok and "outside the working directory" in out and "TOP SECRET" not in out


async def test_dotdot_inside_is_fine(wd):
    ok, out = await call(wd, "read_file", path="src/../notes.txt")
    assert ok and "alpha" in out


async def test_absolute_path_refused(wd, outside):
    ok, out = await call(wd, "read_file", path=str(outside))
    assert not ok and "absolute path" in out and "relative" in out


async def test_home_path_refused(wd):
    ok, out = await call(wd, "read_file", path="~/.bashrc")
    assert not ok and "absolute path" in out


async def test_symlink_out_refused(wd, outside):
    (wd / "link.txt").symlink_to(outside)
    ok, out = await call(wd, "read_file", path="link.txt")
    assert not ok and "symlink" in out and "TOP SECRET" not in out


async def test_symlinked_dir_out_refused_for_write(wd, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (wd / "sub").symlink_to(target, target_is_directory=True)
    ok, out = await call(wd, "write_file", path="sub/evil.txt", content="x")
    assert not ok and "outside" in out
    assert not (target / "evil.txt").exists()


async def test_symlink_inside_is_followed(wd):
    (wd / "alias.py").symlink_to(wd / "src" / "mod.py")
    ok, out = await call(wd, "read_file", path="alias.py")
    assert ok and "x = 1" in out


async def test_file_swapped_for_symlink_between_check_and_use(wd, outside, monkeypatch):
    """The path is checked, then replaced by a symlink out before it is opened: refused."""
    real = tools.resolve_inside

    def racy(workdir, path):
        result = real(workdir, path)
        victim = wd / "notes.txt"
        victim.unlink()
        victim.symlink_to(outside)
        return result

    monkeypatch.setattr(tools, "resolve_inside", racy)
    ok, out = await call(wd, "read_file", path="notes.txt")
    assert not ok and "symlink" in out and "TOP SECRET" not in out
    ok, out = await call(wd, "write_file", path="notes.txt", content="pwned")
    assert not ok
    assert outside.read_text() == "TOP SECRET"


async def test_dir_swapped_for_symlink_between_check_and_use(wd, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "mod.py").write_text("outside!")
    real = tools.resolve_inside

    def racy(workdir, path):
        result = real(workdir, path)
        os.rename(wd / "src", wd / "src_old")
        (wd / "src").symlink_to(elsewhere, target_is_directory=True)
        return result

    monkeypatch.setattr(tools, "resolve_inside", racy)
    ok, out = await call(wd, "edit_file", path="src/mod.py", search="outside!", replace="changed")
    assert not ok and "symlink" in out
    assert (elsewhere / "mod.py").read_text() == "outside!"


async def test_missing_file(wd):
    ok, out = await call(wd, "read_file", path="nope.txt")
    assert not ok and "does not exist" in out


async def test_binary_file_not_dumped(wd):
    (wd / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    ok, out = await call(wd, "read_file", path="img.png")
    assert ok and "binary file" in out and "\x00" not in out


async def test_fifo_not_read(wd):
    os.mkfifo(wd / "pipe")
    ok, out = await call(wd, "read_file", path="pipe")
    assert not ok and "not a regular file" in out


async def test_huge_file_truncated(wd):
    (wd / "big.txt").write_text("line of text\n" * 40_000)  # ~520 KB
    ok, out = await call(wd, "read_file", path="big.txt", max_lines=100_000)
    assert ok and "[file truncated" in out and len(out) < 210_000


async def test_read_line_window(wd):
    ok, out = await call(wd, "read_file", path="notes.txt", start_line=2, max_lines=1)
    assert ok and out.startswith("beta\n") and "lines 2-2 of 3" in out


async def test_unknown_tool_and_bad_arguments(wd):
    ok, out = await call_tool(DEFAULT_TOOLS, "rm_rf", {}, ToolContext(wd))
    assert not ok and "unknown tool" in out
    ok, out = await call_tool(DEFAULT_TOOLS, "read_file", "{not json", ToolContext(wd))
    assert not ok and "not a valid JSON object" in out
    ok, out = await call_tool(DEFAULT_TOOLS, "write_file", {"path": "a"}, ToolContext(wd))
    assert not ok and "content" in out


# -- write / edit / list / grep -----------------------------------------------------------

async def test_write_creates_dirs(wd):
    ok, out = await call(wd, "write_file", path="new/deep/file.txt", content="hi")
    assert ok and (wd / "new/deep/file.txt").read_text() == "hi"


async def test_edit_exact_unique(wd):
    ok, out = await call(wd, "edit_file", path="src/mod.py", search="y = 2", replace="y = 3")
    assert ok and (wd / "src/mod.py").read_text() == "x = 1\ny = 3\n"


async def test_edit_missing_search_text(wd):
    ok, out = await call(wd, "edit_file", path="src/mod.py", search="z = 9", replace="")
    assert not ok and "not found" in out


async def test_edit_ambiguous_search_text(wd):
    (wd / "dup.txt").write_text("same\nsame\n")
    ok, out = await call(wd, "edit_file", path="dup.txt", search="same", replace="other")
    assert not ok and "2 times" in out and (wd / "dup.txt").read_text() == "same\nsame\n"


async def test_list_dir_marks_links_out(wd, outside):
    (wd / "link.txt").symlink_to(outside)
    ok, out = await call(wd, "list_dir", path=".")
    assert ok and "src/" in out and "notes.txt" in out and "link.txt -> (link outside" in out


async def test_grep_skips_links_out_and_binaries(wd, outside):
    (wd / "link.txt").symlink_to(outside)
    (wd / "bin.dat").write_bytes(b"SECRET\x00\x01")
    (wd / "src" / "c.py").write_text("# SECRET marker here\n")
    ok, out = await call(wd, "grep", pattern="SECRET")
    assert ok and out == "src/c.py:1: # SECRET marker here"


async def test_grep_outside_refused(wd):
    ok, out = await call(wd, "grep", pattern="x", path="..")
    assert not ok and "outside" in out


# -- shell -----------------------------------------------------------------------------------

async def test_shell_runs_in_workdir(wd):
    ok, out = await call(wd, "run_shell", command="pwd && cat notes.txt | wc -l && exit 3")
    assert ok and os.path.realpath(wd) in out and "3" in out and "[exit code 3]" in out


async def test_shell_hanging_command_killed_with_children(wd):
    marker = wd / "child.pid"  # outside the OS sandbox, so the pid is this host's (sandboxed: test_confinement)
    ok, out = await call_tool(DEFAULT_TOOLS, "run_shell",
                              {"command": f"sleep 60 & echo $! > {marker}; sleep 60", "timeout": 0.5},
                              ToolContext(wd, sandbox=Policy(mode="off")))
    assert ok and "timed out" in out and "killed" in out
    pid = int(marker.read_text())
    for _ in range(100):  # the background child is gone too (reaped by init, maybe not instantly)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        if Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            break
        time.sleep(0.02)
    else:
        pytest.fail("background child still running")


async def test_shell_background_child_does_not_hang(wd):
    ok, out = await call(wd, "run_shell", command="sleep 30 & echo started", timeout=20)
    assert ok and "started" in out and "[exit code 0]" in out


async def test_shell_huge_output_capped(wd):
    cmd = f"{sys.executable} -c \"import sys; sys.stdout.write('x' * 1_000_000)\""
    ok, out = await call(wd, "run_shell", command=cmd)
    assert ok and "[output truncated: showed 200000 of 1000000 bytes]" in out and len(out) < 201_000


async def test_shell_env_has_no_secrets(wd, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-leak")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp-leak")
    monkeypatch.setenv("MY_SECRET", "shh")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-leak")
    monkeypatch.setenv("HARMLESS", "visible")
    ok, out = await call(wd, "run_shell", command="env")
    assert ok and "PATH=" in out and "HARMLESS" not in out  # an allowlist, not a denylist
    for leak in ("sk-leak", "ghp-leak", "shh", "aws-leak"):
        assert leak not in out
    ok, out = await call_tool(DEFAULT_TOOLS, "run_shell", {"command": "env"}, ToolContext(wd, passthrough=["HARMLESS"]))
    assert "HARMLESS=visible" in out


async def test_shell_secrets_passed_when_configured(wd, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-pass")
    ok, out = await call_tool(DEFAULT_TOOLS, "run_shell", {"command": "echo $OPENAI_API_KEY"},
                              ToolContext(wd, pass_secrets=True))
    assert ok and "sk-pass" in out


async def test_shell_streams_output_events(wd):
    seen = []
    ctx = ToolContext(wd, emit=lambda kind, text, data: seen.append((kind, text)))
    ok, out = await call_tool(DEFAULT_TOOLS, "run_shell", {"command": "echo one; echo two"}, ctx)
    assert ok and seen and all(k == "shell_output" for k, _ in seen)
    assert "".join(t for _, t in seen) == "one\ntwo\n"
