"""
The Django metrics view of README.md's "Prometheus metrics" section, as a
project's ``views.py`` and ``urls.py`` in one module (the ``ROOT_URLCONF`` of
``metrics_django_run.py``).
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from relay.contrib.django import get_bridge
from relay.contrib.prometheus import register

register(get_bridge())


def metrics(request: HttpRequest) -> HttpResponse:
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)


urlpatterns = [path("metrics", metrics)]
