"""Every command keeps freed memory for its next step (glibc's mallopt), unless the user turns it off."""

import os
import platform
import subprocess
import sys

import pytest

CHECK = "from sid4llm.allocator import keep_freed_memory; print(keep_freed_memory(), keep_freed_memory())"


def run_check(**environment: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "SID4LLM_KEEP_FREED_MEMORY"}
    return subprocess.run([sys.executable, "-c", CHECK], env={**env, **environment}, capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")
def test_the_setting_is_in_force_on_glibc_and_applying_it_again_changes_nothing():
    assert run_check() == "True True"


def test_the_user_turns_it_off_or_tunes_malloc_themselves():
    assert run_check(SID4LLM_KEEP_FREED_MEMORY="0") == "False False"
    assert run_check(MALLOC_MMAP_MAX_="65536") == "False False"


def test_every_command_applies_it(monkeypatch):
    import sid4llm.allocator as allocator
    from sid4llm.cli import run_command

    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    run_command(lambda: "done", [], argv=[])
    assert calls == [1]
