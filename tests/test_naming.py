"""Tests for ``relay.naming.sender_name``."""

from __future__ import annotations

import collections
import enum
import functools
import json
import math
import os.path

import pytest

from relay.naming import sender_name


class Model:
    def method(self) -> None:
        pass

    @classmethod
    def factory(cls) -> None:
        pass

    @staticmethod
    def helper() -> None:
        pass

    class Inner:
        pass


def function() -> None:
    pass


def outer() -> object:
    def inner() -> None:
        pass

    return inner


class Colour(enum.StrEnum):
    RED = "red"


def test_str_is_its_own_name() -> None:
    assert sender_name("shop.orders") == "shop.orders"
    assert sender_name("") == ""


def test_str_subclass_gives_plain_str() -> None:
    name = sender_name(Colour.RED)
    assert name == "red"
    assert type(name) is str


def test_none_stays_none() -> None:
    assert sender_name(None) is None


@pytest.mark.parametrize(
    ("sender", "name"),
    [
        (Model, f"{__name__}.Model"),
        (Model.Inner, f"{__name__}.Model.Inner"),
        (int, "builtins.int"),
        (collections.OrderedDict, "collections.OrderedDict"),
        (function, f"{__name__}.function"),
        (outer(), f"{__name__}.outer.<locals>.inner"),
        (Model.method, f"{__name__}.Model.method"),
        (Model().method, f"{__name__}.Model.method"),
        (Model.factory, f"{__name__}.Model.factory"),
        (Model.helper, f"{__name__}.Model.helper"),
        (len, "builtins.len"),
        (math.sqrt, "math.sqrt"),
        (json.dumps, "json.dumps"),
        ([].append, "builtins.list.append"),
        ("x".upper, "builtins.str.upper"),
        (str.upper, "builtins.str.upper"),
        (dict.fromkeys, "builtins.dict.fromkeys"),
        (object.__init__, "builtins.object.__init__"),
        ("x".__add__, "builtins.str.__add__"),
    ],
)
def test_classes_functions_and_methods_are_named_by_dotted_path(sender: object, name: str) -> None:
    assert sender_name(sender) == name


def test_module_is_named_by_its_name() -> None:
    assert sender_name(json) == "json"
    assert sender_name(os.path) == os.path.__name__


@pytest.mark.parametrize(
    ("sender", "name"),
    [
        (Model(), f"{__name__}.Model"),
        (42, "builtins.int"),
        (b"bytes", "builtins.bytes"),
        (Colour, f"{__name__}.Colour"),
        (functools.partial(function), "functools.partial"),
        (list[int], "types.GenericAlias"),
    ],
)
def test_other_objects_are_named_by_their_type(sender: object, name: str) -> None:
    assert sender_name(sender) == name


def test_instances_of_one_class_share_a_name() -> None:
    assert sender_name(Model()) == sender_name(Model()) == sender_name(Model)


class Named:
    pass


class Other:
    pass


def test_register_name_names_a_class_and_resolves_it_back() -> None:
    from relay.naming import class_named, register_name

    assert sender_name(Named) == f"{__name__}.Named"
    register_name(Named, "tests.Named")
    assert sender_name(Named) == "tests.Named"
    assert sender_name(Named()) == "tests.Named"  # instances are named by their type
    assert class_named("tests.Named") is Named
    assert class_named("tests.Nope") is None
    assert class_named(None) is None
    register_name(Named, "tests.Named")  # the same pair again is harmless
    with pytest.raises(ValueError, match=r"already named 'tests\.Named'"):
        register_name(Named, "tests.Renamed")
    with pytest.raises(ValueError, match="already belongs to"):
        register_name(Other, "tests.Named")
    with pytest.raises(TypeError, match="takes a class"):
        register_name(Named(), "x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="non-empty str"):
        register_name(Other, "")
    assert sender_name(Other) == f"{__name__}.Other"
