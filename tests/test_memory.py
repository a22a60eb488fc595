"""spadegan.memory: with freed memory kept, a buffer made again is not faulted in again; the
spadegan command starts with tcmalloc where it is installed."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

import spadegan.memory as memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc on Linux")

BUFFER_BYTES = 64 << 20  # above glibc's largest dynamic mmap threshold (32 MiB): mapped afresh by default
PAGES = BUFFER_BYTES // resource.getpagesize()

CHILD = """
import resource, sys, torch
from spadegan.memory import keep_freed_memory
applied = keep_freed_memory()

def make():  # every page written, as a forward writes its activations
    buffer = torch.empty({bytes} // 4)
    buffer.fill_(1.0)
    return buffer

# Rounds first: until glibc's per-thread cache of small chunks is full, the few bytes an aligned
# allocation splits off can sit between a freed buffer and the heap's top, and the next request
# of that size is served from new pages; the steady state is what every later call sees.
for _ in range(16):
    warm = make()
    del warm
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
second = make()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""".format(bytes=BUFFER_BYTES)


def faults_of_second_buffer(**env: str) -> tuple[bool, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "LD_PRELOAD")}
    result = subprocess.run([sys.executable, "-c", CHILD], env={**clean, **env}, capture_output=True, text=True,
                            check=True)
    applied, faults = result.stdout.split()
    return applied == "True", int(faults)


def transparent_huge_pages_always() -> bool:
    setting = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    return setting.is_file() and "[always]" in setting.read_text()


def test_a_freed_buffer_is_reused_without_page_faults():
    applied, faults = faults_of_second_buffer()
    assert applied
    # The second buffer is the first one's pages, already mapped: a handful of faults for the
    # allocator's own bookkeeping, not one per page.
    assert faults < PAGES / 100, f"{faults} page faults for a reused {BUFFER_BYTES >> 20} MiB buffer"


@pytest.mark.skipif(transparent_huge_pages_always(), reason="huge pages fault 2 MiB at a time")
def test_without_the_setting_every_page_faults_again():
    # What the setting removes: glibc maps the buffer afresh and the kernel faults in each page.
    applied, faults = faults_of_second_buffer(SPADE_KEEP_FREED_MEMORY="0")
    assert not applied
    assert faults >= PAGES / 2


def test_the_users_allocator_settings_are_left_alone():
    applied, _ = faults_of_second_buffer(MALLOC_TRIM_THRESHOLD_="131072")
    assert not applied


def test_spade_commands_keep_freed_memory(tmp_path):
    missing = tmp_path / "missing.png"
    script = ("import spadegan.memory as m\n"
              "from spadegan.cli import main\n"
              f"try:\n    main(['synthesize', {str(missing)!r}, '--out', {str(tmp_path / 'out')!r}])\n"
              "except (SystemExit, Exception):\n    pass\n"
              "print(m._applied)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "True"


# The allocator the spadegan command starts with.

TCMALLOC_INSTALLED = memory.tcmalloc_library() is not None


class ExecCalled(Exception):
    pass


def start_and_catch_the_exec(monkeypatch, library: str | None, **env: str) -> tuple | None:
    """start_with_preferred_allocator with the library lookup and os.execve stubbed: the execve
    arguments it would have run with, or None where it lets the process go on."""
    for name in ("LD_PRELOAD", "SPADE_ALLOCATOR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(memory, "tcmalloc_library", lambda: library)
    monkeypatch.setattr(memory, "tcmalloc_loaded", lambda: False)

    def execve(path, argv, environment):
        raise ExecCalled(path, argv, environment)

    monkeypatch.setattr(memory.os, "execve", execve)
    try:
        memory.start_with_preferred_allocator()
    except ExecCalled as called:
        return called.args
    return None


def test_the_command_runs_again_with_tcmalloc_preloaded(monkeypatch):
    path, argv, environment = start_and_catch_the_exec(monkeypatch, "libtcmalloc_minimal.so.4")
    assert path == sys.executable and argv == sys.orig_argv
    assert environment["LD_PRELOAD"] == "libtcmalloc_minimal.so.4"
    assert environment["PATH"] == os.environ["PATH"]


@pytest.mark.parametrize("library, env", [
    (None, {}),  # not installed
    ("libtcmalloc_minimal.so.4", {"SPADE_ALLOCATOR": "system"}),  # the user's opt-out
    ("libtcmalloc_minimal.so.4", {"LD_PRELOAD": "libjemalloc.so.2"}),  # the user's own preload
])
def test_the_process_goes_on_as_started(monkeypatch, library, env):
    assert start_and_catch_the_exec(monkeypatch, library, **env) is None


def test_an_unknown_allocator_choice_is_refused(monkeypatch):
    with pytest.raises(SystemExit, match="SPADE_ALLOCATOR=jemalloc: expected tcmalloc"):
        start_and_catch_the_exec(monkeypatch, "libtcmalloc_minimal.so.4", SPADE_ALLOCATOR="jemalloc")


def test_the_console_scripts_start_with_the_preferred_allocator():
    from importlib.metadata import entry_points

    for name in ("spadegan", "spade"):
        (script,) = entry_points(group="console_scripts", name=name)
        assert script.value == "spadegan.__main__:main"


def spadegan_version(**env: str) -> str:
    """``python -m spadegan --version``: the command's own entry point, as a user starts it."""
    clean = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "SPADE_ALLOCATOR", "SPADE_KEEP_FREED_MEMORY")}
    return subprocess.run([sys.executable, "-m", "spadegan", "--version"], env={**clean, **env}, capture_output=True,
                          text=True, check=True, timeout=120).stdout


@pytest.mark.skipif(not TCMALLOC_INSTALLED, reason="tcmalloc (libtcmalloc-minimal4) is not installed")
def test_the_command_runs_on_tcmalloc():
    # Started again once (a process that started itself again and again would not answer), with
    # tcmalloc mapped; glibc's malloc, not the one in use, is left alone.
    assert "allocator: tcmalloc)" in spadegan_version()


def test_the_command_runs_on_glibc_when_told_to():
    assert "allocator: glibc, freed memory kept)" in spadegan_version(SPADE_ALLOCATOR="system")
    assert "allocator: glibc)" in spadegan_version(SPADE_ALLOCATOR="system", SPADE_KEEP_FREED_MEMORY="0")


@pytest.mark.skipif(not TCMALLOC_INSTALLED, reason="tcmalloc (libtcmalloc-minimal4) is not installed")
def test_tcmalloc_reuses_a_freed_buffer_without_page_faults():
    applied, faults = faults_of_second_buffer(LD_PRELOAD=memory.tcmalloc_library())
    assert not applied
    assert faults < PAGES / 100, f"{faults} page faults for a reused {BUFFER_BYTES >> 20} MiB buffer under tcmalloc"
