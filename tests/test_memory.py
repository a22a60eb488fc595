"""spadegan.memory: with freed memory kept, a buffer made again is not faulted in again."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

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
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
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
