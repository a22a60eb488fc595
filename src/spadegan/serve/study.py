"""The preference study (``spadegan study``): people judge pairs of images made from the same label
map by two methods, as in the paper's user study (Table 2): "we give the workers an input
segmentation mask and two synthesis outputs from different methods and ask them to choose the
output image that looks more like a corresponding image of the segmentation mask", with
unlimited time.

- Items are matched by file name (stem) across the label folder and the two methods' folders.
- Each trial puts method A on the left or the right at random (recorded with the trial); the
  image URLs name the trial and the side, never the method.
- A voter (a random id in a cookie) sees the items with the fewest votes first and never judges
  the same item twice: the store takes one vote per (voter, item), however many trials of the
  item the voter fetched (a second is refused with 409).
- Votes go to SQLite in WAL mode, one connection per request and one ``BEGIN IMMEDIATE``
  transaction per vote; a trial takes one vote (a second is refused with 409).
- The report gives the share of votes for A with its 95% Wilson score interval, and how often
  the left image was chosen (a check for side bias).
"""

from __future__ import annotations

import io
import math
import secrets
import sqlite3
import time
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from ..imageio import COLOUR_MODES, ID_MODES

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal
VOTER_COOKIE = "spade_voter"


# -- statistics ---------------------------------------------------------------------------------

def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% for the default z); (0, 1) when
    there are no trials."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Report:
    name_a: str
    name_b: str
    votes: int
    votes_a: int
    left_chosen: int          # votes for whichever image was on the left
    voters: int
    items: int                # items with at least one vote

    @property
    def share_a(self) -> float | None:
        return self.votes_a / self.votes if self.votes else None

    @property
    def interval_a(self) -> tuple[float, float]:
        return wilson_interval(self.votes_a, self.votes)

    def as_dict(self) -> dict:
        low, high = self.interval_a
        return {"name_a": self.name_a, "name_b": self.name_b, "votes": self.votes, "votes_a": self.votes_a,
                "votes_b": self.votes - self.votes_a, "preference_a": self.share_a,
                "interval_a_95": [low, high], "left_chosen": self.left_chosen, "voters": self.voters,
                "items": self.items}

    def text(self) -> str:
        if not self.votes:
            return f"no votes yet ({self.name_a} vs {self.name_b})"
        low, high = self.interval_a
        left = 100 * self.left_chosen / self.votes
        return (f"{self.name_a} preferred over {self.name_b} in {100 * self.share_a:.1f}% of {self.votes} votes "
                f"(95% Wilson interval {100 * low:.1f}%–{100 * high:.1f}%; {self.votes_a} vs "
                f"{self.votes - self.votes_a}; {self.voters} voters, {self.items} label maps; the left image "
                f"was chosen in {left:.1f}%)")


# -- the items ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Item:
    name: str
    label: Path
    a: Path
    b: Path


def _images_by_stem(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder ({what})")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            if path.stem in found:
                raise ValueError(f"{what}: {found[path.stem].name} and {path.name} have the same name; keep one")
            found[path.stem] = path
    return found


def match_items(dir_a: str | Path, dir_b: str | Path, labels: str | Path) -> list[Item]:
    """The label maps that both methods have an image for, matched by file name (stem)."""
    by_label = _images_by_stem(Path(labels), "label maps")
    by_a = _images_by_stem(Path(dir_a), "method A")
    by_b = _images_by_stem(Path(dir_b), "method B")
    names = sorted(set(by_label) & set(by_a) & set(by_b))
    if not names:
        raise ValueError(f"no label map in {labels} has an image of the same name in both {dir_a} and {dir_b}")
    return [Item(n, by_label[n], by_a[n], by_b[n]) for n in names]


def _check_readable(path: Path, what: str, label: bool) -> None:
    """Decode ``path`` once, so that a file the study cannot show stops it at start-up."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
    except Exception as error:  # noqa: BLE001 - Pillow raises many types for unreadable files
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path}: cannot read this {what} as an image ({reason})") from None
    if label and mode not in ID_MODES | COLOUR_MODES:
        raise ValueError(f"{path}: a label map must hold class ids (grayscale, palette-index or 16-bit PNG) "
                         f"or colours (RGB), got an image of mode {mode!r}")


def check_items(items: list[Item]) -> None:
    """Every label map and image of the study can be read; ``ValueError`` naming the first
    file that cannot."""
    for item in items:
        _check_readable(item.label, "label map", label=True)
        _check_readable(item.a, "image of method A", label=False)
        _check_readable(item.b, "image of method B", label=False)


# -- the votes ------------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    id TEXT PRIMARY KEY,
    item TEXT NOT NULL,
    a_side TEXT NOT NULL CHECK (a_side IN ('left', 'right')),   -- where method A was shown
    voter TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS votes (
    trial TEXT PRIMARY KEY REFERENCES trials(id),               -- one vote per trial
    item TEXT NOT NULL,
    a_side TEXT NOT NULL,
    choice TEXT NOT NULL CHECK (choice IN ('left', 'right')),
    winner TEXT NOT NULL CHECK (winner IN ('a', 'b')),
    voter TEXT NOT NULL,
    seconds REAL NOT NULL,                                       -- from showing the pair to the vote
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS votes_voter ON votes (voter);
CREATE INDEX IF NOT EXISTS votes_voter_item ON votes (voter, item);
CREATE INDEX IF NOT EXISTS votes_item ON votes (item);
"""


class VoteError(ValueError):
    """A vote the store refuses: ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Trial:
    id: str
    item: str
    a_side: str
    voter: str
    created: float


class StudyStore:
    """Trials and votes in one SQLite file (WAL mode; a connection per call, so any thread or
    process may use it)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)  # autocommit; explicit transactions
        db.execute("PRAGMA busy_timeout=30000")
        db.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable at checkpoints, never corrupt
        return _Closing(db)

    def set_meta(self, **values: str) -> None:
        with self._connect() as db:
            db.executemany("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                           list(values.items()))

    def meta(self) -> dict[str, str]:
        with self._connect() as db:
            return dict(db.execute("SELECT key, value FROM meta").fetchall())

    def new_trial(self, item: str, voter: str) -> Trial:
        trial = Trial(secrets.token_urlsafe(12), item, secrets.choice(("left", "right")), voter, time.time())
        with self._connect() as db:
            db.execute("INSERT INTO trials (id, item, a_side, voter, created) VALUES (?, ?, ?, ?, ?)",
                       (trial.id, trial.item, trial.a_side, trial.voter, trial.created))
        return trial

    def trial(self, trial_id: str) -> Trial | None:
        with self._connect() as db:
            row = db.execute("SELECT id, item, a_side, voter, created FROM trials WHERE id = ?", (trial_id,)).fetchone()
        return Trial(*row) if row else None

    def vote(self, trial_id: str, choice: str, voter: str) -> str:
        """Record the choice ('left' or 'right') of ``voter`` on a trial; returns the winner ('a' or
        'b'). :class:`VoteError` for an unknown trial (404), another voter's trial (403), a second
        vote on the trial or on its item by this voter (409), or a bad choice (422)."""
        if choice not in ("left", "right"):
            raise VoteError(f"choice must be 'left' or 'right', not {choice!r}", 422)
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")  # one writer at a time; others wait (busy_timeout)
            try:
                row = db.execute("SELECT item, a_side, voter, created FROM trials WHERE id = ?", (trial_id,)).fetchone()
                if row is None:
                    raise VoteError("unknown trial: reload the page for a new pair", 404)
                item, a_side, trial_voter, created = row
                if trial_voter != voter:
                    raise VoteError("this pair was shown to another voter", 403)
                if db.execute("SELECT 1 FROM votes WHERE trial = ?", (trial_id,)).fetchone():
                    raise VoteError("this pair has been voted on already", 409)
                # checked inside the write transaction, so two tabs voting at once cannot both pass
                if db.execute("SELECT 1 FROM votes WHERE voter = ? AND item = ?", (voter, item)).fetchone():
                    raise VoteError("you have voted on this label map already (in another tab?); "
                                    "reload the page for a new pair", 409)
                winner = "a" if choice == a_side else "b"
                now = time.time()
                db.execute("INSERT INTO votes (trial, item, a_side, choice, winner, voter, seconds, created) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (trial_id, item, a_side, choice, winner, voter, now - created, now))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return winner

    def votes_by_item(self) -> dict[str, int]:
        with self._connect() as db:
            return dict(db.execute("SELECT item, COUNT(*) FROM votes GROUP BY item").fetchall())

    def items_of_voter(self, voter: str) -> set[str]:
        with self._connect() as db:
            return {row[0] for row in db.execute("SELECT DISTINCT item FROM votes WHERE voter = ?", (voter,))}

    def report(self, name_a: str | None = None, name_b: str | None = None) -> Report:
        meta = self.meta()
        with self._connect() as db:
            votes, votes_a, left, voters, items = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(winner = 'a'), 0), COALESCE(SUM(choice = 'left'), 0), "
                "COUNT(DISTINCT voter), COUNT(DISTINCT item) FROM votes").fetchone()
        return Report(name_a or meta.get("name_a", "A"), name_b or meta.get("name_b", "B"), votes, votes_a, left,
                      voters, items)


class _Closing:
    """A connection that closes at the end of its ``with`` block (sqlite3's own context manager
    only ends a transaction)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        return self.db

    def __exit__(self, *exc) -> None:
        self.db.close()


# -- the app --------------------------------------------------------------------------------------

def _label_png(path: Path, palette_name: str) -> bytes:
    """A label map as the voter sees it: id maps in the palette's colours, colour maps as they are."""
    import numpy as np
    from PIL import Image

    from ..palettes import palette_for

    image = Image.open(path)
    image.load()
    if image.mode in ("RGB", "RGBA"):
        shown = image.convert("RGB")
    else:
        ids = np.array(image, dtype=np.int64)
        label_nc = {"coco": 182, "ade20k": 150, "cityscapes": 35}.get(palette_name, int(ids.max()) + 1)
        shown = Image.fromarray(palette_for(palette_name, label_nc).colorize(ids))
    buffer = io.BytesIO()
    shown.save(buffer, format="PNG")
    return buffer.getvalue()


def create_study_app(dir_a: str | Path, dir_b: str | Path, labels: str | Path, store: StudyStore, *,
                     name_a: str = "A", name_b: str = "B", palette: str = "coco", show_label: bool = True,
                     allowed_hosts: frozenset[str] | None = None):
    """The study's ASGI app: the voting page at ``/``, the results at ``/report``;
    ``allowed_hosts``: the Host names it answers (:mod:`spadegan.serve.web`; None: any)."""
    from fastapi import Body, Cookie, FastAPI, HTTPException
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
    from starlette.concurrency import run_in_threadpool

    from .web import HostCheck, add_page_routes

    matched = match_items(dir_a, dir_b, labels)
    check_items(matched)
    items = {item.name: item for item in matched}
    store.set_meta(name_a=name_a, name_b=name_b, dir_a=str(dir_a), dir_b=str(dir_b), labels=str(labels))
    label_png = lru_cache(maxsize=1024)(lambda name: _label_png(items[name].label, palette))
    app = FastAPI(title="spadegan preference study", version="1",
                  description="Two images of one label map from two methods: which looks more like a real "
                              "photo of it? (the paper's Table 2 protocol)")
    app.state.store = store
    app.state.items = items
    if allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed=allowed_hosts)

    def pick(voter: str) -> str | None:
        """An item this voter has not judged, among those with the fewest votes."""
        seen = store.items_of_voter(voter)
        counts = store.votes_by_item()
        candidates = [name for name in items if name not in seen]
        if not candidates:
            return None
        fewest = min(counts.get(name, 0) for name in candidates)
        return secrets.choice([name for name in candidates if counts.get(name, 0) == fewest])

    add_page_routes(app, lambda: resources.files("spadegan.serve").joinpath("static", "study.html").read_text("utf-8"))

    @app.get("/api/trial", summary="A new pair for this voter (sides at random)")
    def trial(spade_voter: str | None = Cookie(None)) -> JSONResponse:
        voter = spade_voter if spade_voter and len(spade_voter) <= 64 else secrets.token_urlsafe(12)
        name = pick(voter)
        judged = len(store.items_of_voter(voter))
        body: dict = {"judged": judged, "items": len(items), "show_label": show_label}
        if name is None:
            body["done"] = True
        else:
            t = store.new_trial(name, voter)
            body.update(done=False, trial=t.id, left=f"/api/trials/{t.id}/left", right=f"/api/trials/{t.id}/right",
                        label=f"/api/trials/{t.id}/label")
        response = JSONResponse(body, headers={"Cache-Control": "no-store"})
        response.set_cookie(VOTER_COOKIE, voter, max_age=365 * 24 * 3600, httponly=True, samesite="strict")
        return response

    @app.get("/api/trials/{trial_id}/{side}", summary="An image of a trial: left, right or label",
             responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}})
    def trial_image(trial_id: str, side: str):
        t = store.trial(trial_id)
        if t is None or side not in ("left", "right", "label"):
            raise HTTPException(404, "no such image")
        item = items.get(t.item)
        if item is None:
            raise HTTPException(404, f"the label map {t.item} is no longer part of this study")
        path = item.label if side == "label" else item.a if side == t.a_side else item.b
        if not path.is_file():  # changed since start-up
            raise HTTPException(404, f"the image of {item.name} is no longer there")
        if side == "label":
            try:
                return Response(label_png(item.name), media_type="image/png")
            except (OSError, ValueError):
                raise HTTPException(404, f"the label map of {item.name} can no longer be read") from None
        return FileResponse(path, headers={"Cache-Control": "no-store"})

    @app.post("/api/vote", summary="Record a vote: {trial, choice: 'left' | 'right'}")
    def vote(trial: str = Body(...), choice: str = Body(...), spade_voter: str | None = Cookie(None)) -> dict:
        try:
            store.vote(trial, choice, spade_voter or "")
        except VoteError as error:
            raise HTTPException(error.status, str(error)) from None
        return {"recorded": True, "judged": len(store.items_of_voter(spade_voter or "")), "items": len(items)}

    @app.get("/api/report", summary="The share of votes for A with its 95% Wilson interval")
    async def report() -> dict:
        return (await run_in_threadpool(store.report, name_a, name_b)).as_dict()

    @app.get("/report", response_class=HTMLResponse, include_in_schema=False)
    async def report_page() -> HTMLResponse:
        import html

        r = await run_in_threadpool(store.report, name_a, name_b)
        return HTMLResponse("<!doctype html><meta charset='utf-8'><title>study report</title>"
                            "<body style='font:15px system-ui;background:#17181c;color:#e9e9ec;padding:40px'>"
                            f"<h2>{html.escape(name_a)} vs {html.escape(name_b)}</h2><p>{html.escape(r.text())}</p>"
                            "<p><a style='color:#9bd82c' href='/'>back to the study</a></p></body>")

    return app


def run_study(dir_a, dir_b, labels, db, *, name_a: str, name_b: str, host: str = "127.0.0.1", port: int = 8001,
              palette: str = "coco", allowed_hosts: tuple[str, ...] = ()) -> None:
    import uvicorn

    from .web import allowed_host_names

    store = StudyStore(db)
    app = create_study_app(dir_a, dir_b, labels, store, name_a=name_a, name_b=name_b, palette=palette,
                           allowed_hosts=allowed_host_names(host, allowed_hosts))
    print(f"spadegan study: {len(app.state.items)} label maps, {name_a} vs {name_b}, votes in {db}; "
          f"http://{host}:{port}/ (results: http://{host}:{port}/report)", flush=True)
    uvicorn.run(app, host=host, port=port)
