"""Run the numeric tests under other instruction sets, as other CPUs would compute them, and
report each bound's margin over the largest error seen.

ATen's kernels (``ATEN_CPU_CAPABILITY``) and oneDNN's (``ONEDNN_MAX_CPU_ISA``) each pick an
instruction set at start-up; another choice sums in another order, so float32 results move by
rounding. A bound that holds on one CPU only was set at the noise floor. For every setting this
runs ``pytest -m numeric`` in a fresh process with ``SPADE_NUMERIC_LOG`` set (the tests record
each comparison through ``tests/conftest.py:check_error``), then prints, per check, the bound, the
largest error over all settings and their ratio. It exits non-zero when a test fails or a margin
is below ``--min-margin``.

    python scripts/numeric_isa.py                          # the nine settings
    python scripts/numeric_isa.py --aten avx2 --onednn AVX2  # one setting (what CI adds)
    python scripts/numeric_isa.py -- -k fast_spade         # arguments after -- go to pytest

A setting above what the CPU has is capped by oneDNN (the ISA it reports is printed); ATen takes
its setting as given, so ATen settings the CPU cannot run are left out, and said so.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ATEN = ["default", "avx2", "avx512"]          # in rising order
ONEDNN = ["AVX2", "AVX512_CORE", "ALL"]

_PROBE = """
import torch, torch.nn.functional as F
F.conv2d(torch.randn(1, 64, 32, 32), torch.randn(64, 64, 3, 3), padding=1)
print("aten:" + torch.backends.cpu.get_cpu_capability())
"""


def effective_isa(env: dict[str, str]) -> str:
    """What ATen and oneDNN run under ``env``, as they report it."""
    probe = subprocess.run([sys.executable, "-c", _PROBE], env={**env, "ONEDNN_VERBOSE": "1"},
                           capture_output=True, text=True)
    text = probe.stdout + probe.stderr
    aten = next((line.split(":", 1)[1] for line in text.splitlines() if line.startswith("aten:")), "?")
    onednn = next((line.split("isa:", 1)[1] for line in text.splitlines() if ",isa:" in line), "?")
    return f"ATen {aten}, oneDNN {onednn}"


def cpu_runs_aten(aten: str) -> bool:
    """Whether this CPU can run ATen's kernels for ``aten``: ATen takes the setting as given, and
    kernels of an instruction set the CPU lacks die of an illegal instruction."""
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    native = effective_isa(env).split(",")[0].removeprefix("ATen ").lower()
    return aten not in ATEN or native not in ATEN or ATEN.index(aten) <= ATEN.index(native)


def run_setting(aten: str, onednn: str, log: Path, pytest_args: list[str]) -> tuple[int, str]:
    env = {**os.environ, "ATEN_CPU_CAPABILITY": aten, "ONEDNN_MAX_CPU_ISA": onednn,
           "SPADE_NUMERIC_LOG": str(log)}
    isa = effective_isa(env)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "numeric", "-p", "no:cacheprovider",
                             *pytest_args], cwd=REPO, env=env, capture_output=True, text=True)
    summary = (result.stdout.strip().splitlines() or ["(no output)"])[-1]
    if result.returncode != 0:
        print(result.stdout[-4000:], result.stderr[-2000:], sep="\n", file=sys.stderr)
    print(f"  {aten:>7} / {onednn:<11} ({isa}): {summary}", flush=True)
    return result.returncode, isa


def margin(record: dict) -> float:
    return record["bound"] / record["error"] if record["error"] else math.inf


def smallest_margins(records: list[dict]) -> list[dict]:
    """Per (test, check), the record of the setting where bound / error was smallest."""
    worst: dict[tuple[str, str], dict] = {}
    for record in records:
        key = (record["test"], record["what"])
        if key not in worst or margin(record) < margin(worst[key]):
            worst[key] = record
    return sorted(worst.values(), key=margin)


def print_row(row: dict) -> None:
    shown = f"{margin(row):9.1f}×" if row["error"] else "    exact"
    print(f"  {shown}  bound {row['bound']:.2e}  error {row['error']:.2e}  ({row['setting']})  "
          f"{row['test'].split('::', 1)[-1]}: {row['what']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--aten", nargs="+", default=ATEN, help="ATEN_CPU_CAPABILITY values")
    parser.add_argument("--onednn", nargs="+", default=ONEDNN, help="ONEDNN_MAX_CPU_ISA values")
    parser.add_argument("--min-margin", type=float, default=10.0, help="fail below this bound/error ratio")
    parser.add_argument("--json", type=Path, help="also write every record here")
    parser.add_argument("--show", type=int, default=30, help="how many of the smallest margins to print")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args(argv)

    records, failed, not_here = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        print(f"numeric tests under {len(args.aten) * len(args.onednn)} instruction-set settings:", flush=True)
        for aten in args.aten:
            if not cpu_runs_aten(aten):
                not_here += [f"{aten}/{onednn}" for onednn in args.onednn]
                print(f"  {aten:>7} / *: not run, this CPU lacks the instructions of ATen's {aten} kernels", flush=True)
                continue
            for onednn in args.onednn:
                log = Path(tmp) / f"{aten}-{onednn}.jsonl"
                code, isa = run_setting(aten, onednn, log, args.pytest_args)
                if code != 0:
                    failed.append(f"{aten}/{onednn}")
                setting = f"{aten}/{onednn}"
                if log.exists():
                    records += [{**json.loads(line), "setting": setting, "isa": isa}
                                for line in log.read_text().splitlines()]
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))

    rows = smallest_margins(records)
    typical = [row for row in rows if not row.get("worst_case")]
    worst_case = [row for row in rows if row.get("worst_case")]
    low = [row for row in typical if margin(row) < args.min_margin]
    print(f"\n{len(typical)} checks; the smallest margins (bound / error, the worst setting of each):")
    for row in typical[:args.show]:
        print_row(row)
    if worst_case:
        print(f"\n{len(worst_case)} checks against proven worst-case bounds (no margin asked):")
        for row in worst_case:
            print_row(row)
    if not_here:
        print(f"\nnot run on this CPU: {', '.join(not_here)} (run the script on a CPU that has them)")
    if failed:
        print(f"\nFAILED under: {', '.join(failed)}")
    if low:
        print(f"\n{len(low)} checks have a margin below {args.min_margin:g}×")
    return 1 if failed or low else 0


if __name__ == "__main__":
    sys.exit(main())
