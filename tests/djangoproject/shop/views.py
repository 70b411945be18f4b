"""Views the gunicorn and runserver tests request."""

from __future__ import annotations

import datetime as dt
import decimal
import os
import time
from pathlib import Path

from django.db import transaction
from django.http import HttpRequest, JsonResponse

from shop.models import Customer, Order


def ping(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"pid": os.getpid()})


def rendezvous(request: HttpRequest) -> JsonResponse:
    """
    Wait until ``count`` requests of this kind are being served at once.

    A sync gunicorn worker serves one request at a time, so when ``count``
    of these return, each was served by a different worker.
    """
    folder = Path(os.environ["RELAYTEST_RENDEZVOUS"])
    count = int(request.GET.get("count", "2"))
    (folder / f"{os.getpid()}.pid").touch()
    deadline = time.monotonic() + 20
    while len(list(folder.glob("*.pid"))) < count:
        if time.monotonic() > deadline:
            return JsonResponse({"pid": os.getpid(), "met": False}, status=504)
        time.sleep(0.02)
    return JsonResponse({"pid": os.getpid(), "met": True})


def _new_order(number: str) -> Order:
    customer, _ = Customer.objects.get_or_create(name=f"customer of {number}")
    return Order.objects.create(
        customer=customer,
        number=number,
        total=decimal.Decimal("19.99"),
        placed_at=dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC),
    )


def save_order(request: HttpRequest) -> JsonResponse:
    with transaction.atomic():
        order = _new_order(request.GET["number"])
    return JsonResponse({"pid": os.getpid(), "pk": order.pk})


class _Rollback(Exception):
    pass


def rollback_order(request: HttpRequest) -> JsonResponse:
    try:
        with transaction.atomic():
            _new_order(request.GET["number"])
            raise _Rollback
    except _Rollback:
        pass
    return JsonResponse({"pid": os.getpid(), "rolled_back": True})
