"""
``relay dashboard``: a live page of a namespace's workers, their counters,
per-signal send and delivery rates and delivery latency, in the browser.

Served by the standard library (``http.server``, server-sent events); the
page's HTML, JavaScript and CSS ship in the package (``static/``), with no
CDN and no web dependency.

    from relay import Relay
    from relay.dashboard import Dashboard

    bridge = Relay("redis://127.0.0.1:6379/0", namespace="shop")
    with Dashboard(bridge, port=8765) as board:
        print(board.url)
        ...
"""

from __future__ import annotations

from relay.dashboard.server import Dashboard, run_dashboard

__all__ = ["Dashboard", "run_dashboard"]
