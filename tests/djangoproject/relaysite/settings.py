"""
Settings of the test project, driven by environment variables the tests set:

RELAYTEST_DB
    The sqlite file every process of a test shares.
RELAYTEST_URL, RELAYTEST_NAMESPACE
    The test session's private Redis and the test's own namespace.
RELAYTEST_RELAY_JSON
    Replaces the whole RELAY setting (JSON ``null`` removes it), for the
    misconfiguration tests.
RELAYTEST_RECORD
    The file receivers append a JSON line to for every call (shop.record).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "relay-tests-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["shop", "relay.contrib.django"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "relaysite.urls"
WSGI_APPLICATION = "relaysite.wsgi.application"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("RELAYTEST_DB", str(BASE_DIR / "unused.sqlite3")),
        "OPTIONS": {"timeout": 30},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
MEDIA_ROOT = os.environ.get("RELAYTEST_MEDIA", str(BASE_DIR / "media"))

RELAY: Any = {
    # Port 9 (discard): nothing answers unless a test names its own Redis.
    "URL": os.environ.get("RELAYTEST_URL", "redis://127.0.0.1:9/0"),
    "NAMESPACE": os.environ.get("RELAYTEST_NAMESPACE", "relaytest"),
    "SIGNALS": ["shop.signals.order_note"],
    "MODELS": ["shop.Customer", "shop.Order"],
    "AUTOSTART": True,
    "OPTIONS": {"secret": "relay-tests-secret", "socket_timeout": 10},
}
if "RELAYTEST_RELAY_JSON" in os.environ:
    RELAY = json.loads(os.environ["RELAYTEST_RELAY_JSON"])
    if RELAY is None:
        del RELAY

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"pid": {"format": "%(process)d %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "pid"}},
    "loggers": {"relay": {"handlers": ["stderr"], "level": "INFO"}},
}
