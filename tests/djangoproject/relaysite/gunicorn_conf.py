"""gunicorn settings that start each worker's bridge eagerly, after the fork."""

from typing import Any


def post_worker_init(worker: Any) -> None:
    import relay.contrib.django

    relay.contrib.django.start()
