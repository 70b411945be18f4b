"""
A Django process serving relay's metrics from a view (``metrics_django.py``).

    python -m tests.procs.metrics_django_run URL NAMESPACE COUNT

Configures a minimal project with ``relay.contrib.django``, starts its bridge,
sends ``metrics.order_placed`` COUNT times, then GETs ``/metrics`` through
Django's test client and prints one JSON line: the status, the content type
and the body.
"""

from __future__ import annotations

import json
import sys


def main(url: str, namespace: str, count: int) -> None:
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["testserver"],
        INSTALLED_APPS=["relay.contrib.django"],
        MIDDLEWARE=[],
        ROOT_URLCONF="tests.procs.metrics_django",
        RELAY={
            "URL": url,
            "NAMESPACE": namespace,
            "SIGNALS": ["tests.procs.metrics_app.order_placed"],
            "AUTOSTART": False,
        },
    )
    django.setup()
    from django.test import Client

    import relay.contrib.django
    from tests.procs.metrics_app import order_placed

    bridge = relay.contrib.django.start()
    try:
        for number in range(count):
            order_placed.send(sender=None, number=number)
        assert bridge.flush(10), "the sends were not published in time"
        response = Client().get("/metrics")
    finally:
        relay.contrib.django.stop()
    print(
        json.dumps(
            {
                "status": response.status_code,
                "content_type": response["Content-Type"],
                "body": response.content.decode(),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
