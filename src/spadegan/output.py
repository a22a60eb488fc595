"""An output folder that receives a complete set of files or none.

:class:`StagedFolder` checks its target before any work is done (it is a folder or can become
one, it can be written, none of the planned files collides with a folder or with an input),
then collects the files in a hidden staging folder beside the target, and moves them into it
only when every file is written. Whatever fails before, the target is left as it was. Every
file is written the same way, so they all get the permissions the user's umask gives.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterable
from pathlib import Path

from PIL import Image


class OutputFolderError(ValueError):
    """An output folder that cannot take the planned files: one line naming the option and path."""


def _first_line(error: OSError) -> str:
    return error.strerror or str(error).splitlines()[0]


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_target(target: Path, names: Iterable[str], inputs: Iterable[Path] = (), option: str = "--out") -> None:
    """Refuse, in one line, a target the planned relative file ``names`` cannot be written into."""
    if target.exists() and not target.is_dir():
        raise OutputFolderError(f"{option} {target}: exists and is not a folder; give a folder for the output")
    if not target.exists():
        ancestor = _nearest_existing(target.parent)
        if not ancestor.is_dir():
            raise OutputFolderError(f"{option} {target}: {ancestor} is a file, not a folder")
        return
    protected = {path.resolve() for path in inputs}
    for name in names:
        destination = target / name
        for folder in list(destination.relative_to(target).parents)[-2::-1]:  # the subfolders, outermost first
            if (target / folder).exists() and not (target / folder).is_dir():
                raise OutputFolderError(f"{option} {target}: {target / folder} is a file; the output puts "
                                        f"a folder there (remove or rename the file)")
        if destination.is_dir():
            raise OutputFolderError(f"{option} {target}: {destination} is a folder; the output writes a file there")
        if destination.exists() and destination.resolve() in protected:
            raise OutputFolderError(f"{option} {target}: writing {name} would replace the input {destination}")


class StagedFolder:
    """``with StagedFolder(out, names) as staged: staged.write_png(...); ...; staged.publish()``:
    the files appear in ``out`` together at :meth:`publish`, or not at all."""

    def __init__(self, target: str | os.PathLike, names: Iterable[str], inputs: Iterable[Path] = (),
                 option: str = "--out"):
        self.target = Path(target)
        self.option = option
        check_target(self.target, list(names), inputs, option)
        self.staging = self._make_staging()
        self.published = False

    def _make_staging(self) -> Path:
        # Inside an existing target, so that moving the files in stays on one file system and
        # needs no other permission; beside a new one, which is then renamed into place.
        parent = self.target if self.target.is_dir() else self.target.parent
        staging = parent / f".{self.target.name or 'out'}.staging-{secrets.token_hex(4)}"
        try:
            parent.mkdir(parents=True, exist_ok=True)
            staging.mkdir()
        except OSError as error:
            raise OutputFolderError(f"{self.option} {self.target}: cannot write there "
                                    f"({_first_line(error)})") from None
        return staging

    def __enter__(self) -> StagedFolder:
        return self

    def __exit__(self, *exc) -> None:
        self.discard()

    def path(self, name: str) -> Path:
        """Where to write the file ``name`` (relative to the target) for now."""
        path = self.staging / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write_png(self, name: str, image: Image.Image) -> None:
        image.save(self.path(name), format="PNG")

    def write_text(self, name: str, text: str) -> None:
        self.path(name).write_text(text, encoding="utf-8")

    def publish(self) -> None:
        """Move every staged file into the target (a new target: the staging folder becomes it)."""
        if not self.target.exists():
            try:
                os.rename(self.staging, self.target)
                self.published = True
                return
            except OSError:
                if not self.target.is_dir():  # not a folder that appeared meanwhile: a real failure
                    raise
        self._merge()
        self.published = True

    def _merge(self) -> None:
        files = sorted(p for p in self.staging.rglob("*") if p.is_file())
        pages = [p for p in files if p.suffix == ".html"]  # a gallery last: it links to the others
        for staged in [p for p in files if p.suffix != ".html"] + pages:
            destination = self.target / staged.relative_to(self.staging)
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, destination)
        shutil.rmtree(self.staging, ignore_errors=True)

    def discard(self) -> None:
        if not self.published:
            shutil.rmtree(self.staging, ignore_errors=True)
