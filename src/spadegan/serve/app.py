"""The web demo's HTTP app (FastAPI): the painting page and the JSON/PNG API it uses.

``create_app(synthesizer)`` gives an ASGI app; ``spadegan serve`` runs it with uvicorn on
127.0.0.1. The API (OpenAPI at ``/docs`` and ``/openapi.json``):

- ``GET  /api/model``: the model (size, style options), its classes in groups with their colours,
  the background class, the style presets, the server's limits;
- ``GET  /api/classes``: the classes and colours alone;
- ``POST /api/synthesize``: a label map (PNG of ids or palette colours) + a style image, a preset
  or a seed → the image as PNG (``X-Seed`` names the seed used);
- ``POST /api/labels/decode``: a label map file → its ids as JSON (what the page loads);
- ``GET  /api/presets/{name}``: a preset's reference picture (PNG);
- ``GET  /api/layouts/random?seed=S``: a procedural landscape layout (COCO-Stuff models);
- ``GET  /api/status``: the queue's counters.

Inputs are checked before they reach the model: the request body and each upload have a byte
limit (413); uploads are decoded a few at a time, each only after its pixel count, read from its
header, passed the pixel limit (413; :mod:`spadegan.serve.admission`); label maps must hold the
model's classes (ids or palette colours) at the model's size unless ``resize`` is set (422, with
the reason in plain words). Errors are ``{"detail": "..."}``. Synthesis requests wait in a
bounded queue (:mod:`spadegan.serve.queue`); a full queue answers 503 at once, as does a full
queue of uploads waiting to be decoded.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, TypeVar
from urllib.parse import quote

import numpy as np
import torch
from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool

from ..imageio import ids_from_image, image_to_tensor, mask_from_image
from ..inference import Synthesizer
from ..palettes import COCO_STUFF
from ..seeds import SEED_LIMIT
from .admission import (
    DECODE_BYTES_PER_PIXEL,
    DecodeGate,
    GateFull,
    Refusal,
    Refused,
    decode_upload,
)
from .catalog import (
    Preset,
    background_class,
    class_groups,
    encode_ids,
    landscape_presets,
    png_bytes,
    random_layout,
)
from .queue import Job, QueueFull, SynthesisQueue
from .web import HostCheck, add_page_routes, allowed_host_names

T = TypeVar("T")
MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 8 * MiB       # per uploaded file
    max_pixels: int = 2048 * 2048         # per uploaded image (label map or style), read from its header
    max_decoding: int = 2                 # uploads read and decoded at once (the others wait their turn)
    max_batch: int = 4                    # requests synthesized in one generator call
    max_waiting: int = 32                 # requests the queue holds, and uploads waiting to be decoded, before 503

    @property
    def max_body_bytes(self) -> int:      # a label map, a style image and a re-roll mask, plus the form's overhead
        return 3 * self.max_upload_bytes + 64 * 1024

    @property
    def max_decode_bytes(self) -> int:    # the most memory one upload holds while it is decoded
        return self.max_upload_bytes + self.max_pixels * DECODE_BYTES_PER_PIXEL

    @property
    def max_decoding_bytes(self) -> int:  # ... and all decodings together
        return self.max_decoding * self.max_decode_bytes


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413 (by its Content-Length before it
    is read, or as soon as a chunked body passes the limit)."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def _refusal(self) -> JSONResponse:
        return JSONResponse({"detail": f"the request is larger than this server accepts "
                                       f"({self.max_bytes / MiB:.1f} MiB)"}, status_code=413)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._refusal()(scope, receive, send)
        received = 0
        exceeded = started = False

        async def limited_receive():
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message):
            # once the body passed the limit, whatever the app answers (FastAPI turns the
            # interrupted read into a 400) is replaced by the 413
            nonlocal started
            if message["type"] == "http.response.start":
                if started:
                    return
                started = True
                if exceeded:
                    await self._refusal()(scope, receive, send)
                    return
            if not exceeded:
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _BodyTooLarge:
            pass
        if exceeded and not started:
            await self._refusal()(scope, receive, send)


def _static(name: str) -> str:
    return resources.files("spadegan.serve").joinpath("static", name).read_text(encoding="utf-8")


class DemoState:
    """The model and what the page offers for it; request parsing (runs in worker threads)."""

    def __init__(self, synthesizer: Synthesizer, limits: Limits, presets: Sequence[Preset] | None,
                 background: str | int | None, name: str | None):
        self.synthesizer = synthesizer
        self.limits = limits
        self.palette = synthesizer.palette
        self.dontcare = synthesizer.config.semantics.contain_dontcare_label
        self.background = background_class(self.palette, background)
        self.groups = class_groups(self.palette, self.dontcare)
        self.size = synthesizer.output_size
        self.has_encoder = synthesizer.networks.encoder is not None and synthesizer.takes_style
        if presets is None:
            presets = landscape_presets(self.size) if self.has_encoder and self.palette is COCO_STUFF else []
        self.presets = {preset.name: preset for preset in (presets if self.has_encoder else [])}
        self._preset_png = {name: png_bytes(p.image) for name, p in self.presets.items()}
        self._preset_tensor = {name: _style_tensor(p.image, self.size) for name, p in self.presets.items()}
        self.name = name or "model"
        self.last_labels: np.ndarray | None = None  # the latest label map a synthesis request carried

    # -- descriptions ----------------------------------------------------------------------------

    def classes(self) -> dict:
        return {
            "palette": self.palette.name,
            "background": self.background,
            "dontcare": self.palette.dontcare_id if self.dontcare else None,
            "groups": [{"name": name, "classes": [{"id": c.id, "name": c.name, "color": c.color} for c in entries]}
                       for name, entries in self.groups],
        }

    def model(self) -> dict:
        g = self.synthesizer.config.generator
        return {
            "name": self.name,
            "generator": type(self.synthesizer.networks.generator).__name__,
            "size": {"height": self.size[0], "width": self.size[1]},
            "label_nc": self.synthesizer.config.semantics.label_nc,
            "takes_style": self.synthesizer.takes_style,
            "style_image": self.has_encoder,
            "z_dim": g.z_dim,
            "presets": [{"name": p.name, "description": p.description, "url": f"/api/presets/{quote(p.name)}"}
                        for p in self.presets.values()],
            "random_layouts": self.palette is COCO_STUFF,
            "limits": {"max_upload_bytes": self.limits.max_upload_bytes, "max_pixels": self.limits.max_pixels,
                       "max_decoding": self.limits.max_decoding, "max_batch": self.limits.max_batch,
                       "max_waiting": self.limits.max_waiting},
            **self.classes(),
        }

    # -- parsing (in the decoding threads) --------------------------------------------------------

    def labels_from_image(self, image: Image.Image, resize: bool):
        """A decoded label-map upload → (a validated Layout (1×1×H×W) at the model's size, the
        upload's (height, width) before any resizing); :class:`Refused` (422) for what the model
        cannot take."""
        try:
            ids = ids_from_image(image, self.palette, "label map", has_dontcare=self.dontcare)
        except ValueError as error:
            raise Refused(422, str(error)) from None
        try:
            return self.synthesizer.layout(torch.from_numpy(ids), resize=resize).compact(), ids.shape
        except ValueError as error:
            raise Refused(422, str(error)) from None

    def reroll_mask_from_image(self, image: Image.Image) -> torch.Tensor:
        mask = mask_from_image(image)
        if not mask.any():
            raise Refused(422, "the re-roll mask marks no pixel (non-zero or opaque pixels mark the region)")
        return torch.from_numpy(mask)

    def style_from_image(self, image: Image.Image) -> torch.Tensor:
        try:
            return _style_tensor(image, self.size)
        except (ValueError, OSError) as error:  # a mode Pillow cannot turn into RGB
            raise Refused(422, f"the style image cannot be read as a colour picture ({error})") from None

    def preset_tensor(self, preset: str | None) -> torch.Tensor | None:
        return None if preset is None else self._preset_tensor[preset]

    def check_style_choice(self, has_image: bool, preset: str | None) -> None:
        """Refuse a style the model cannot take, before any upload is decoded."""
        if not has_image and not preset:
            return
        if not self.has_encoder:
            raise HTTPException(422, "this model has no image encoder, so it takes no style image or preset; "
                                     "it makes one image per label map" + (" (or one per seed)" if
                                                                           self.synthesizer.takes_style else ""))
        if has_image and preset:
            raise HTTPException(422, "give either a style image or a preset, not both")
        if preset and preset not in self.presets:
            known = ", ".join(self.presets) or "none"
            raise HTTPException(422, f"unknown preset {preset!r}; this server has: {known}")


def _style_tensor(image: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """A reference picture as the encoder takes it: RGB at the model's size, 3×H×W in [-1, 1]."""
    image = image.convert("RGB")
    if image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.BICUBIC)
    return image_to_tensor(image)


def create_app(synthesizer: Synthesizer, *, limits: Limits | None = None, presets: Sequence[Preset] | None = None,
               background: str | int | None = None, name: str | None = None, warm_up: bool = True,
               allowed_hosts: frozenset[str] | None = None) -> FastAPI:
    """The demo app for ``synthesizer``. ``presets``: style presets (default: procedural landscape
    pictures for COCO-Stuff models with an image encoder); ``background``: the class the canvas
    starts with and the eraser paints (a name or id; default sky where the palette has it);
    ``allowed_hosts``: the Host names it answers (:mod:`spadegan.serve.web`; None: any)."""
    limits = limits or Limits()
    state = DemoState(synthesizer, limits, presets, background, name)
    queue = SynthesisQueue(synthesizer, max_batch=limits.max_batch, max_waiting=limits.max_waiting)
    gate = DecodeGate(limits.max_decoding, limits.max_waiting)

    async def decoded(upload: UploadFile, what: str, parse: Callable[[Image.Image], T]) -> T:
        """``parse`` of an uploaded image, admitted as :mod:`spadegan.serve.admission` describes."""
        try:
            result = await gate.run(decode_upload, upload.file, what, limits.max_upload_bytes,
                                    limits.max_pixels, parse)
        except GateFull as error:
            raise HTTPException(503, str(error)) from None
        if isinstance(result, Refusal):
            raise HTTPException(result.status, result.detail)
        return result

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        queue.start()
        if warm_up:  # the first request should not pay for lazy initialisation
            blank = torch.full((1, 1, *state.size), state.background, dtype=torch.long)
            layout = synthesizer.layout(blank)
            await asyncio.get_running_loop().run_in_executor(None, queue.run_now, [Job(layout, 0)])
        yield
        await queue.stop()
        gate.close()

    app = FastAPI(title="spadegan web demo", version="1", lifespan=lifespan,
                  description="Semantic image synthesis (SPADE / GauGAN): paint a label map, get a picture.")
    app.state.demo = state
    app.state.queue = queue
    app.state.gate = gate
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    if allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed=allowed_hosts)

    @app.exception_handler(RequestValidationError)
    async def plain_validation_error(request: Request, error: RequestValidationError):
        parts = []
        for item in error.errors():
            where = ".".join(str(p) for p in item.get("loc", ()) if p not in ("body", "query"))
            parts.append(f"{where}: {item.get('msg', 'invalid')}" if where else item.get("msg", "invalid"))
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)

    errors = {413: {"description": "an upload over the byte or pixel limit"},
              422: {"description": "an input the model cannot take (unknown class ids or colours, "
                                   "wrong size, unreadable image)"}}

    add_page_routes(app, lambda: _static("index.html"))

    @app.get("/api/model", summary="The model, its classes and colours, presets and limits")
    async def model() -> dict:
        return state.model()

    @app.get("/api/classes", summary="The model's classes in groups, with their colours (#rrggbb)")
    async def classes() -> dict:
        return state.classes()

    @app.get("/api/status", summary="The synthesis queue's counters")
    async def status() -> dict:
        s = queue.stats
        return {"waiting": queue.waiting, "requests": s.requests, "batches": s.batches, "rejected": s.rejected,
                "largest_batch": s.largest_batch, "busy_seconds": round(s.busy_seconds, 3)}

    @app.get("/api/presets/{name}", summary="A style preset's reference picture (PNG)",
             responses={200: {"content": {"image/png": {}}}, 404: {"description": "no such preset"}})
    async def preset_image(name: str) -> Response:
        data = state._preset_png.get(name)
        if data is None:
            raise HTTPException(404, f"no preset named {name!r}")
        return Response(data, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/layouts/random", summary="A random procedural landscape layout (COCO-Stuff models)")
    async def random(seed: int = Query(0, ge=0, lt=2 ** 31)) -> dict:
        if state.palette is not COCO_STUFF:
            raise HTTPException(404, "random layouts are landscapes in COCO-Stuff ids; this model has other classes")
        return encode_ids(await run_in_threadpool(random_layout, seed, state.size))

    @app.post("/api/labels/decode", summary="A label-map file (ids or palette colours) → its ids (JSON)",
              responses=errors)
    async def decode(label: Annotated[UploadFile, File(description="PNG of class ids or of palette colours")],
                     resize: bool = Form(True, description="resize (nearest) to the model's size")) -> dict:
        layout, (height, width) = await decoded(label, "label map", lambda image: state.labels_from_image(image, resize))
        resized = (height, width) != layout.size
        return {**encode_ids(layout.labels[0, 0].numpy()),
                "resized_from": {"height": height, "width": width} if resized else None}

    @app.post("/api/synthesize", summary="A label map (+ style image, preset or seed) → the image (PNG)",
              response_class=Response,
              responses={200: {"content": {"image/png": {}}, "description": "the image; X-Seed: the seed used"},
                         **errors, 503: {"description": "the queue is full: try again"}})
    async def synthesize(
            label: Annotated[UploadFile, File(description="PNG of class ids (grayscale / 16-bit) or palette colours")],
            style: Annotated[UploadFile | None, File(description="a reference picture whose style to take")] = None,
            preset: str | None = Form(None, description="the name of a style preset (see /api/model)"),
            seed: int | None = Form(None, ge=0, lt=SEED_LIMIT, description="random style seed, 0 <= seed < 2**63 "
                                                                             "(default: a new one)"),
            resize: bool = Form(False, description="resize the label map (nearest) to the model's size"),
            reroll_mask: Annotated[UploadFile | None, File(description="a mask of the label map's size (non-zero "
                                                           "or opaque pixels): that region painted anew")] = None,
            reroll_seed: int | None = Form(None, ge=0, lt=SEED_LIMIT, description="the region's new look "
                                           "(default: a new one)"),
    ) -> Response:
        if style is not None and not (style.filename or style.size):  # an empty file field is no style
            style = None
        preset = preset or None
        state.check_style_choice(style is not None, preset)
        if reroll_mask is not None and not (reroll_mask.filename or reroll_mask.size):
            reroll_mask = None
        if reroll_mask is not None and not synthesizer.takes_style:
            raise HTTPException(422, "this model takes no noise or style code: there is nothing to re-roll")
        layout, _ = await decoded(label, "label map", lambda image: state.labels_from_image(image, resize))
        mask = None
        if reroll_mask is not None:
            mask = await decoded(reroll_mask, "re-roll mask", state.reroll_mask_from_image)
            if tuple(mask.shape) != tuple(layout.labels.shape[-2:]):
                raise HTTPException(422, f"the re-roll mask is {mask.shape[1]}x{mask.shape[0]}, the label map "
                                         f"{layout.labels.shape[-1]}x{layout.labels.shape[-2]}: give them one size")
            if reroll_seed is None:
                reroll_seed = secrets.randbelow(2 ** 31)
        if style is not None:
            style_tensor = await decoded(style, "style image", state.style_from_image)
        else:
            style_tensor = state.preset_tensor(preset)
        if seed is None and synthesizer.takes_style:
            seed = secrets.randbelow(2 ** 31)
        state.last_labels = layout.labels[0, 0].numpy().astype(np.int64)
        job = Job(layout, seed, style_tensor, mask, reroll_seed if mask is not None else None)
        started = time.perf_counter()
        try:
            image = await queue.submit(job)
        except QueueFull as error:
            raise HTTPException(503, str(error)) from None
        except ValueError as error:  # the model refused the input after all
            raise HTTPException(422, str(error)) from None
        elapsed = time.perf_counter() - started
        data = await run_in_threadpool(png_bytes, image)
        headers = {"X-Synthesis-Ms": f"{elapsed * 1000:.0f}", "Cache-Control": "no-store"}
        if seed is not None:
            headers["X-Seed"] = str(seed)
        if mask is not None:
            headers["X-Reroll-Seed"] = str(reroll_seed)
        return Response(data, media_type="image/png", headers=headers)

    return app


def serve(checkpoint: str | Path | None = None, *, host: str = "127.0.0.1", port: int = 8000,
          device: str | torch.device | None = None, limits: Limits | None = None,
          extra_presets: Sequence[str | Path] = (), background: str | int | None = None,
          log_level: str = "info", precision: str = "fp32", allowed_hosts: Sequence[str] = ()) -> None:
    """Load a checkpoint (default: the bundled model) and serve the demo until interrupted;
    ``precision`` as in :class:`Synthesizer`; ``allowed_hosts``: Host names to answer besides
    this machine's and ``host`` ('*': any)."""
    import uvicorn

    from .. import bundled

    path = bundled.require_bundled_model() if checkpoint is None else Path(checkpoint)
    synthesizer = Synthesizer.from_checkpoint(path, device=device, precision=precision)
    presets = None
    if extra_presets:
        size = synthesizer.output_size
        base = (landscape_presets(size) if synthesizer.palette is COCO_STUFF else [])
        presets = base + [Preset(Path(p).stem, _load_preset(p), f"from {Path(p).name}") for p in extra_presets]
    app = create_app(synthesizer, limits=limits, presets=presets, background=background,
                     name=path.resolve().name, allowed_hosts=allowed_host_names(host, allowed_hosts))
    print(f"spadegan serve: {path} on http://{host}:{port}/ (API: http://{host}:{port}/docs)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def _load_preset(path: str | Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except Exception as error:  # noqa: BLE001
        raise ValueError(f"{path}: cannot read the preset image ({error})") from None
    return image.convert("RGB")
