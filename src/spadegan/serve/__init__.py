"""The web demo (``spadegan serve``) and the preference study (``spadegan study``).

:func:`create_app` makes the demo's ASGI app for a :class:`~spadegan.inference.Synthesizer`;
:func:`serve` loads a checkpoint and runs it with uvicorn. The page is one self-contained file
(``static/index.html``: no CDN, no external request).
"""

from .app import Limits, create_app, serve

__all__ = ["Limits", "create_app", "serve"]
