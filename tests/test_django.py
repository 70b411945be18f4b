"""
relay.contrib.django across real processes: a Django project (tests/djangoproject)
with a shared sqlite database, the session's Redis, two ``manage.py
relay_worker`` listeners and a ``manage.py shop_actor`` process that saves,
deletes and sends.

What they show: a save in one process fires the opted-in receivers of the
others with the model class and a snapshot built without a query, at commit
and never after a rollback; receivers a project already has stay local and fire
once; ``scope="once"`` runs in one process; ``post_delete``, ``m2m_changed``
and project signals cross too; a script publishes without starting anything.
"""

from __future__ import annotations

import itertools
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relay.testing import RedisServer

sys.path.insert(0, str(Path(__file__).parent / "djangoproject"))

from harness import SECRET, Actor, Project, Record, sender, template

pytestmark = pytest.mark.redis

WORKERS = {"worker1", "worker2"}
EVERYONE = {"actor", *WORKERS}
PLACED_AT = "2024-02-29T23:59:58.999999+00:00"
_numbers = itertools.count(1)


def number(prefix: str) -> str:
    return f"{prefix}-{next(_numbers)}"


class Cluster:
    """Two relay workers and an actor on one project, for the whole module."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.workers = {role: project.relay_worker(role) for role in sorted(WORKERS)}
        self.actor = Actor(project)
        self.customer = self.actor("customer", name="the customer")["pk"]
        # Its first relayed save started the actor's bridge (AUTOSTART).
        assert self.actor("bridge")["running"]
        self._barriers = itertools.count(1)

    def order(self, **fields: Any) -> tuple[str, int]:
        """Save a new order (committed) and return its number and pk."""
        fields.setdefault("number", number("O"))
        fields.setdefault("customer", self.customer)
        pk = self.actor("order", **fields)["pk"]
        return fields["number"], pk

    def barrier(self) -> None:
        """
        Return once every process has handled everything published before:
        a note sent from this test process now reaches each of them after
        all earlier messages (Redis delivers in publish order).
        """
        text = f"barrier {next(self._barriers)}"
        with sender(self.project) as send:
            send(text)
        self.project.wait_for_records("order_note", EVERYONE, text=text)


@pytest.fixture(scope="module")
def cluster(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    if not redis_server.ping():
        pytest.fail(f"the test Redis server at {redis_server.url} does not answer")
    project = Project(
        tmp_path_factory.mktemp("cluster"),
        template(tmp_path_factory),
        redis_server.url,
        f"t{uuid.uuid4().hex[:12]}",
    )
    try:
        yield Cluster(project)
    finally:
        project.close()


def by_role(records: list[Record]) -> dict[str, list[Record]]:
    grouped: dict[str, list[Record]] = {}
    for record in records:
        grouped.setdefault(record["role"], []).append(record)
    return grouped


def test_a_save_fires_opted_in_receivers_elsewhere_with_a_snapshot(cluster: Cluster) -> None:
    project, actor = cluster.project, cluster.actor
    order_number, pk = cluster.order(
        total="1234567.89",
        placed_at=PLACED_AT,
        paid=False,
        notes="ünïcode ✓",
        extra={"a": [1, {"b": None}]},
        attachment="docs/invoice.pdf",
        blob="00ff",
        atomic=True,
    )
    got = project.wait_for_records("all_post_save", EVERYONE, number=order_number)
    actor_origin = got["worker1"][0]["origin"]
    expected_fields = {
        "id": ["int", pk],
        "customer_id": ["int", cluster.customer],
        "number": ["str", order_number],
        "total": ["Decimal", "1234567.89"],
        "placed_at": ["datetime", "2024-02-29 23:59:58.999999+00:00"],
        "paid": ["bool", False],
        "notes": ["str", "ünïcode ✓"],
        "extra": ["dict", {"a": [1, {"b": None}]}],
        "attachment": ["FieldFile", "docs/invoice.pdf"],
        "blob": ["bytes", "b'\\x00\\xff'"],
    }
    for role in WORKERS:
        (record,) = got[role]
        assert record["remote"] and record["origin"] == actor_origin
        assert record["pid"] != actor.pid
        # The sender arrives as the installed model class, the instance as a
        # snapshot of its model, as if loaded from the database: no query
        # while decoding it or reading its fields.
        assert record["sender"] == "shop.Order" and record["sender_installed"]
        assert (record["created"], record["raw"], record["using"]) == (True, False, "default")
        assert record["update_fields"] is None
        snapshot = record["snapshot"]
        assert snapshot["class"] == "shop.Order" and snapshot["installed_class"]
        assert (snapshot["pk"], snapshot["adding"], snapshot["db"]) == (pk, False, "default")
        assert snapshot["deferred"] == []
        assert snapshot["sql_before"] == 0 and snapshot["sql_after"] == 0
        fields = dict(snapshot["fields"])
        assert fields.pop("uid")[0] == "UUID"
        assert fields == expected_fields
    # In the saving process the mirror fired at commit, after Django's own
    # post_save and the end of the atomic block, with the same snapshot.
    (local,) = got["actor"]
    assert not local["remote"] and local["pid"] == actor.pid
    assert local["snapshot"]["fields"] == got["worker1"][0]["snapshot"]["fields"]
    steps = [
        (r["kind"], r.get("text"))
        for r in project.records(role="actor")
        if r.get("number") == order_number and r["kind"] != "once_post_save"
    ]
    assert steps == [
        ("django_post_save", None),
        ("marker", "saved, not committed"),
        ("all_post_save", None),
        ("unscoped_post_save", None),
        ("marker", "committed"),
    ]

    # An update with update_fields: the flags cross, and what the live
    # instance changed after save() (before the commit) is not in the snapshot.
    actor(
        "update",
        pk=pk,
        set={"paid": True},
        update_fields=["paid"],
        then_set={"notes": "changed after the save"},
    )
    updated = project.wait_for_records(
        "all_post_save", EVERYONE, number=order_number, created=False
    )
    for role in EVERYONE:
        (record,) = updated[role]
        assert record["update_fields"] == ["paid"]
        assert record["update_fields_type"] == "frozenset"
        assert record["snapshot"]["fields"]["paid"] == ["bool", True]
        assert record["snapshot"]["fields"]["notes"] == ["str", "ünïcode ✓"]

    # A raw save (loaddata) says so.
    raw_number = number("RAW")
    actor("raw", pk=900_000 + pk, customer=cluster.customer, number=raw_number)
    raw = project.wait_for_records("all_post_save", EVERYONE, number=raw_number)
    for role in EVERYONE:
        (record,) = raw[role]
        assert (record["raw"], record["created"]) == (True, True)
        assert record["snapshot"]["pk"] == 900_000 + pk


def test_existing_and_unscoped_receivers_stay_local_and_once_runs_once(cluster: Cluster) -> None:
    project = cluster.project
    numbers = [cluster.order()[0] for _ in range(5)]
    for order_number in numbers:
        project.wait_for_records("all_post_save", EVERYONE, number=order_number)
    cluster.barrier()
    for order_number in numbers:
        # The project's receiver on Django's own post_save: once, where it saved.
        existing = project.records("django_post_save", number=order_number)
        assert [(r["role"], r["remote"]) for r in existing] == [("actor", False)]
        # A mirror receiver connected without a scope is local too.
        unscoped = project.records("unscoped_post_save", number=order_number)
        assert [(r["role"], r["remote"]) for r in unscoped] == [("actor", False)]
        # scope="all": once in every process.
        everywhere = by_role(project.records("all_post_save", number=order_number))
        assert {role: len(records) for role, records in everywhere.items()} == dict.fromkeys(
            EVERYONE, 1
        )
        # scope="once": in exactly one of the three listening processes.
        once = project.records("once_post_save", number=order_number)
        assert len(once) == 1, once
        assert once[0]["remote"] or once[0]["role"] == "actor"


def test_a_rolled_back_save_publishes_nothing(cluster: Cluster) -> None:
    project, actor = cluster.project, cluster.actor
    rolled_back = number("RB")
    answer = actor("rollback", customer=cluster.customer, number=rolled_back)
    assert answer["exists"] is False
    # Saves of models that are not in RELAY["MODELS"] are not relayed either.
    actor("audit", message="not relayed")
    actor("tag", name=number("not-relayed-tag"))
    # The barrier: a committed save after them arrives everywhere...
    barrier, _ = cluster.order()
    project.wait_for_records("all_post_save", EVERYONE, number=barrier)
    cluster.barrier()
    # ... and nothing of the rolled-back one ever did, in any process.
    mirrored = [r for r in project.records() if r.get("number") == rolled_back]
    # Django's own post_save did fire, synchronously, as without relay.
    assert [(r["kind"], r["role"]) for r in mirrored] == [("django_post_save", "actor")]
    senders = {r["sender"] for r in project.records("any_post_save")}
    assert senders <= {"shop.Order", "shop.Customer"}, senders


def test_m2m_changed_and_post_delete_cross_with_their_arguments(cluster: Cluster) -> None:
    project, actor = cluster.project, cluster.actor
    order_number, pk = cluster.order()
    tags = actor("tags", order=pk, action="add", names=["red", "blue"])["tags"]
    actor("tags", order=pk, action="remove", names=["red"])
    green = actor("tags", order=pk, action="reverse_add", names=["green"])["tags"]["green"]
    actor("tags", order=pk, action="clear")
    project.wait_for_records(
        "all_m2m_changed", EVERYONE, action="post_clear", instance=["shop.Order", pk]
    )
    for role in WORKERS:
        changes = [
            {k: r[k] for k in ("action", "reverse", "instance", "model", "pk_set", "pk_set_type")}
            for r in project.records("all_m2m_changed", role=role)
            if r["instance"] in (["shop.Order", pk], ["shop.Tag", green])
        ]
        assert changes == [
            {
                "action": "post_add",
                "reverse": False,
                "instance": ["shop.Order", pk],
                "model": "shop.Tag",
                "pk_set": sorted(tags.values()),
                "pk_set_type": "set",
            },
            {
                "action": "post_remove",
                "reverse": False,
                "instance": ["shop.Order", pk],
                "model": "shop.Tag",
                "pk_set": [tags["red"]],
                "pk_set_type": "set",
            },
            {
                "action": "post_add",
                "reverse": True,
                "instance": ["shop.Tag", green],
                "model": "shop.Order",
                "pk_set": [pk],
                "pk_set_type": "set",
            },
            {
                "action": "post_clear",
                "reverse": False,
                "instance": ["shop.Order", pk],
                "model": "shop.Tag",
                "pk_set": None,
                "pk_set_type": "NoneType",
            },
        ]
        for record in project.records("all_m2m_changed", role=role):
            assert record["sender"] == "shop.Order_tags" and record["sender_installed"]
            assert record["model_installed"] and record["using"] == "default"
    assert not [r for r in project.records("all_m2m_changed") if r["action"].startswith("pre_")]

    # Deleting an instance: its snapshot still has its pk; origin is the instance.
    actor("delete_order", pk=pk)
    deleted = project.wait_for_records(
        "all_post_delete", EVERYONE, origin={"instance": "shop.Order", "pk": pk}
    )
    for role in EVERYONE:
        (record,) = deleted[role]
        assert record["sender"] == "shop.Order" and record["sender_installed"]
        assert record["using"] == "default"
        snapshot = record["snapshot"]
        assert (snapshot["class"], snapshot["pk"], snapshot["adding"]) == ("shop.Order", pk, False)
        assert snapshot["fields"]["number"] == ["str", order_number]
        if role != "actor":
            assert snapshot["sql_before"] == 0 and snapshot["sql_after"] == 0

    # A queryset's delete: origin crosses as the model class.
    first, first_pk = cluster.order()
    second, second_pk = cluster.order()
    assert actor("delete_orders", numbers=[first, second])["count"] == 2
    for order_pk in (first_pk, second_pk):

        def queryset_deleted(order_pk: int = order_pk) -> list[Record]:
            return [
                r
                for r in project.records("all_post_delete", role="worker2")
                if r["snapshot"]["pk"] == order_pk
            ]

        (record,) = project.wait_for("queryset delete", queryset_deleted)
        assert record["origin"] == {"class": "shop.Order", "installed": True}

    # A cascade: the orders of a deleted customer go with it, origin the customer.
    customer = actor("customer", name=number("leaving"))["pk"]
    _, doomed = cluster.order(customer=customer)
    actor("delete_customer", pk=customer)
    origin = {"instance": "shop.Customer", "pk": customer}
    cascade = project.wait_for_records(
        "all_post_delete", WORKERS, origin=origin, sender="shop.Customer"
    )
    assert cascade
    for role in WORKERS:
        senders = {
            (r["sender"], r["snapshot"]["pk"])
            for r in project.records("all_post_delete", role=role, origin=origin)
        }
        assert senders == {("shop.Customer", customer), ("shop.Order", doomed)}


def test_a_project_signal_relays_as_it_is_sent(cluster: Cluster) -> None:
    project, actor = cluster.project, cluster.actor
    order_number, pk = cluster.order()
    actor("note", text="about an order", order_id=pk)
    got = project.wait_for_records("order_note", EVERYONE, text="about an order")
    for role in EVERYONE:
        (record,) = got[role]
        # A model sender crosses as its label and arrives as the class.
        assert record["sender"] == "shop.Order"
        assert record["order_id"] == pk
        # The receiver looked the order up in the shared database.
        assert record["number_in_database"] == order_number
        assert record["remote"] == (role != "actor")


def test_snapshots_unit(cluster: Cluster) -> None:
    """Snapshot encoding, decoding and validation, checked inside a Django process."""
    results = cluster.actor("selftest")
    assert results["queries"] == 0 and results["queries_after_reading"] == 0
    assert results["class"] and results["model_kwarg"]
    assert all(results["equal"].values()), results["equal"]
    assert results["types"] == {
        "id": "int",
        "uid": "UUID",
        "customer_id": "int",
        "number": "str",
        "total": "Decimal",
        "placed_at": "datetime",
        "paid": "bool",
        "notes": "str",
        "extra": "dict",
        "attachment": "FieldFile",
        "blob": "bytes",
    }
    assert results["state"] == [False, "default", []]
    assert results["related_loads"] == "selftest customer"
    # Deferred fields stay deferred: never queried to encode, loaded on access.
    assert results["deferred_queries"] == 0
    assert results["deferred"] == [
        "attachment",
        "blob",
        "customer_id",
        "extra",
        "notes",
        "paid",
        "placed_at",
        "uid",
    ]
    assert results["deferred_values"] == ["SELF-1", "1234567.89"]
    assert results["deferred_loads"] == "ünïcode ✓"
    assert results["unsaved"] == [True, "default", None]
    assert results["copy"] == ["SELF-1", {"a": [1, 2, {"b": None}], "c": "d"}, True]
    assert results["unencodable"] == ["extra"]
    # A choices member, as assigned before save(), crosses as its value.
    assert results["choices"] == ["str", "loud", []]
    assert results["malformed"] == ["ValueError"] * 11
    assert results["tampered"] == "WireError"
    assert results["unknown_model"] == "ValueError"


def test_scripts_publish_without_starting_anything(cluster: Cluster) -> None:
    project = cluster.project
    # AUTOSTART: a management command's first relayed send starts its bridge.
    script = Actor(project, role="script")
    assert not script("bridge")["running"]
    # What starts the bridge is not a receiver: send() answers as without relay.
    assert script("note", text="from a script")["responses"] == ["note_received"]
    assert script("bridge")["running"]
    project.wait_for_records("order_note", WORKERS, text="from a script")
    assert script.exit() == 0

    # AUTOSTART off: nothing starts, and what was sent is published at exit.
    relay_setting = {
        "URL": project.redis_url,
        "NAMESPACE": project.namespace,
        "SIGNALS": ["shop.signals.order_note"],
        "MODELS": ["shop.Order"],
        "AUTOSTART": False,
        "OPTIONS": {"secret": SECRET},
    }
    quiet = Actor(project, role="quiet", RELAYTEST_RELAY_JSON=json.dumps(relay_setting))
    quiet("note", text="sent before exit")
    order_number, _ = cluster.order()  # relayed by the actor
    quiet_number = number("Q")
    quiet("order", customer=cluster.customer, number=quiet_number)
    assert not quiet("bridge")["running"]
    project.wait_for_records("all_post_save", WORKERS, number=order_number)
    assert not project.records("order_note", text="sent before exit", remote=True)
    assert quiet.exit() == 0
    project.wait_for_records("order_note", WORKERS, text="sent before exit")
    project.wait_for_records("all_post_save", WORKERS, number=quiet_number)
