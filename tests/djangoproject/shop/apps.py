import os
from pathlib import Path
from typing import Any

from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "shop"

    def ready(self) -> None:
        from django.utils.autoreload import autoreload_started

        from shop import receivers, sqltrace

        sqltrace.install()
        receivers.connect()
        if os.environ.get("RELAYTEST_WATCH"):
            autoreload_started.connect(_watch_test_dir, dispatch_uid="shop.watch")


def _watch_test_dir(sender: Any, **kwargs: Any) -> None:
    # The runserver test touches a file here to make the autoreloader restart.
    sender.watch_dir(Path(os.environ["RELAYTEST_WATCH"]), "*.txt")
