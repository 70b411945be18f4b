"""
``manage.py shop_actor``: saves, deletes and sends, one JSON command per stdin line.

Each command is an object with an ``op``; the answer is one JSON line on
stdout (``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``). It lets a
test drive a Django process step by step; it never starts the bridge itself
(AUTOSTART does, on the first relayed save or send).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand
from django.db import models, transaction

from relay import wire
from relay.contrib.django import get_bridge, snapshot
from shop import sqltrace
from shop.models import AuditEntry, Customer, Order, Tag
from shop.record import record
from shop.signals import order_note


class Rollback(Exception):
    pass


def _order_fields(command: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "customer_id": command["customer"],
        "number": command["number"],
        "total": decimal.Decimal(command.get("total", "10.00")),
        "placed_at": dt.datetime.fromisoformat(
            command.get("placed_at", "2024-05-01T12:30:00.123456+00:00")
        ),
    }
    for name in ("paid", "notes", "extra", "attachment"):
        if name in command:
            fields[name] = command[name]
    if "blob" in command:
        fields["blob"] = bytes.fromhex(command["blob"])
    return fields


def op_customer(command: dict[str, Any]) -> dict[str, Any]:
    return {"pk": Customer.objects.create(name=command["name"]).pk}


def op_order(command: dict[str, Any]) -> dict[str, Any]:
    if not command.get("atomic"):
        return {"pk": Order.objects.create(**_order_fields(command)).pk}
    with transaction.atomic():
        order = Order.objects.create(**_order_fields(command))
        record("marker", text="saved, not committed", number=order.number)
    record("marker", text="committed", number=order.number)
    return {"pk": order.pk}


def op_update(command: dict[str, Any]) -> dict[str, Any]:
    with transaction.atomic():
        order = Order.objects.get(pk=command["pk"])
        for name, value in command.get("set", {}).items():
            setattr(order, name, value)
        order.save(update_fields=command.get("update_fields"))
        # Changes after the save, before the commit, are not in the snapshot.
        for name, value in command.get("then_set", {}).items():
            setattr(order, name, value)
    return {"pk": order.pk}


def op_rollback(command: dict[str, Any]) -> dict[str, Any]:
    try:
        with transaction.atomic():
            order = Order.objects.create(**_order_fields(command))
            pk = order.pk
            raise Rollback
    except Rollback:
        pass
    return {"pk": pk, "exists": Order.objects.filter(pk=pk).exists()}


def op_raw(command: dict[str, Any]) -> dict[str, Any]:
    order = Order(pk=command["pk"], **_order_fields(command))
    order.save_base(raw=True)  # as loaddata saves fixtures
    return {"pk": order.pk}


def op_tags(command: dict[str, Any]) -> dict[str, Any]:
    order = Order.objects.get(pk=command["order"])
    tags = [Tag.objects.get_or_create(name=name)[0] for name in command.get("names", [])]
    action = command["action"]
    if action == "add":
        order.tags.add(*tags)
    elif action == "remove":
        order.tags.remove(*tags)
    elif action == "clear":
        order.tags.clear()
    elif action == "reverse_add":
        for tag in tags:
            tag.orders.add(order)
    return {"tags": {tag.name: tag.pk for tag in tags}}


def op_delete_order(command: dict[str, Any]) -> dict[str, Any]:
    Order.objects.get(pk=command["pk"]).delete()
    return {}


def op_delete_orders(command: dict[str, Any]) -> dict[str, Any]:
    count, _ = Order.objects.filter(number__in=command["numbers"]).delete()
    return {"count": count}


def op_delete_customer(command: dict[str, Any]) -> dict[str, Any]:
    Customer.objects.get(pk=command["pk"]).delete()
    return {}


def op_audit(command: dict[str, Any]) -> dict[str, Any]:
    return {"pk": AuditEntry.objects.create(message=command["message"]).pk}


def op_tag(command: dict[str, Any]) -> dict[str, Any]:
    return {"pk": Tag.objects.create(name=command["name"]).pk}


def op_note(command: dict[str, Any]) -> dict[str, Any]:
    responses = order_note.send(
        sender=Order, text=command["text"], order_id=command.get("order_id")
    )
    return {"responses": [receiver.__qualname__ for receiver, _ in responses]}


def op_bridge(command: dict[str, Any]) -> dict[str, Any]:
    bridge = get_bridge()
    flushed = bridge.flush(timeout=10)
    return {"running": bridge.running, "flushed": flushed, "stats": bridge.stats()}


def _roundtrip(**kwargs: Any) -> dict[str, Any]:
    """Encode kwargs into a frame and decode it, as another process would."""
    frame = _frame(**kwargs)
    return wire.decode_frame(frame)[0].kwargs


def _frame(**kwargs: Any) -> bytes:
    message = (b"\x01" * 16, "self:1:test", 1, "selftest", None, time.time())
    return wire.encode_frame([(*message, wire.encode_kwargs(kwargs))])


def _raises(function: Callable[[], Any]) -> str | None:
    try:
        function()
    except Exception as exc:
        return type(exc).__name__
    return None


class Tone(models.TextChoices):
    LOUD = "loud"


def op_selftest(command: dict[str, Any]) -> dict[str, Any]:
    """Snapshot unit checks, inside a transaction that is rolled back (nothing relayed)."""
    results: dict[str, Any] = {}
    try:
        with transaction.atomic():
            _selftest(results)
            raise Rollback
    except Rollback:
        pass
    return results


def _selftest(results: dict[str, Any]) -> None:
    customer = Customer.objects.create(name="selftest customer")
    placed_at = dt.datetime(2024, 2, 29, 23, 59, 58, 999999, tzinfo=dt.UTC)
    order = Order.objects.create(
        customer=customer,
        number="SELF-1",
        total=decimal.Decimal("1234567.89"),
        placed_at=placed_at,
        paid=True,
        notes="ünïcode ✓",
        extra={"a": [1, 2, {"b": None}], "c": "d"},
        attachment="docs/invoice.pdf",
        blob=b"\x00\x01\xff",
    )
    loaded = Order.objects.get(pk=order.pk)
    attnames = [f.attname for f in Order._meta.concrete_fields]

    before = sqltrace.count()
    got = _roundtrip(order=loaded, model=Order)
    results["queries"] = sqltrace.count() - before
    copy = got["order"]
    results["class"] = type(copy) is Order
    results["model_kwarg"] = got["model"] is Order
    results["equal"] = {a: getattr(copy, a) == getattr(loaded, a) for a in attnames}
    results["types"] = {a: type(getattr(copy, a)).__name__ for a in attnames}
    results["state"] = [copy._state.adding, copy._state.db, sorted(copy.get_deferred_fields())]
    results["queries_after_reading"] = sqltrace.count() - before
    results["related_loads"] = copy.customer.name  # a query, like any instance

    partial = Order.objects.only("number", "total").get(pk=order.pk)
    before = sqltrace.count()
    half = _roundtrip(order=partial)["order"]
    results["deferred_queries"] = sqltrace.count() - before
    results["deferred"] = sorted(half.get_deferred_fields())
    results["deferred_values"] = [half.number, str(half.total)]
    results["deferred_loads"] = half.notes  # loads from the database on access

    unsaved = Order(customer=customer, number="NEW", total=decimal.Decimal(1), placed_at=placed_at)
    new = _roundtrip(order=unsaved)["order"]
    results["unsaved"] = [new._state.adding, new._state.db, new.pk]

    live = Order.objects.get(pk=order.pk)
    frozen = snapshot.copy_instance(live)
    live.number = "CHANGED"
    live.extra["a"].append(3)
    results["copy"] = [frozen.number, frozen.extra, frozen is not live]

    odd = Order(
        customer=customer,
        number="ODD",
        total=decimal.Decimal(1),
        placed_at=placed_at,
        extra={"x": object()},
    )
    results["unencodable"] = sorted(_roundtrip(order=odd)["order"].get_deferred_fields())

    chosen = Order(
        customer=customer, number=Tone.LOUD, total=decimal.Decimal(1), placed_at=placed_at
    )
    picked = _roundtrip(order=chosen)["order"]
    results["choices"] = [
        type(picked.number).__name__,
        picked.number,
        sorted(picked.get_deferred_fields()),
    ]

    decode = snapshot.decoder(Order)
    bad: list[Any] = [
        None,
        [],
        ["default", ["number"], ["a"]],
        ["default", ["number"], [], False],
        ["default", ["nope"], [1], False],
        ["default", ["customer"], [1], False],  # a field name, not its attname
        ["default", ["number", "number"], ["a", "b"], False],
        [1, ["number"], ["a"], False],
        ["default", [1], ["a"], False],
        ["default", ["number"], ["a"], "no"],
        ("default", ["number"], ["a"], False),
    ]
    results["malformed"] = [_raises(lambda p=p: decode(p)) for p in bad]
    frame = _frame(order=loaded)
    results["tampered"] = _raises(lambda: wire.decode_frame(frame.replace(b"number", b"nuMber")))
    results["unknown_model"] = _raises(lambda: snapshot.decode_model_class("shop.Nope"))


OPS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    name[3:]: function for name, function in globals().items() if name.startswith("op_")
}


class Command(BaseCommand):
    help = "Run JSON commands from stdin (for the tests)."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(json.dumps({"ok": True, "ready": True}))
        self.stdout.flush()
        for line in sys.stdin:
            command = json.loads(line)
            if command["op"] == "exit":
                break
            try:
                answer = {"ok": True, **OPS[command["op"]](command)}
            except Exception as exc:
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            self.stdout.write(json.dumps(answer, default=repr))
            self.stdout.flush()
