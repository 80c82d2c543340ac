"""kernelhook.records: tuples with named fields that behave as collections.namedtuple's do."""

import collections
import copy
import pickle

import pytest

from kernelhook.records import Record


class Point(Record, fields="x y label", defaults=("origin",)):
    __slots__ = ()

    def norm1(self) -> int:
        return abs(self.x) + abs(self.y)


NamedPoint = collections.namedtuple("NamedPoint", "x y label", defaults=("origin",))


def test_fields_read_by_name_and_position_as_namedtuple_reads_them():
    ours, theirs = Point(1, -2, "p"), NamedPoint(1, -2, "p")
    assert (ours.x, ours.y, ours.label) == (theirs.x, theirs.y, theirs.label) == (1, -2, "p")
    assert ours[1] == -2 and tuple(ours) == tuple(theirs)
    x, y, label = ours
    assert (x, y, label) == (1, -2, "p")
    assert ours.norm1() == 3
    assert isinstance(ours, tuple)


def test_keywords_and_defaults_fill_the_fields():
    assert Point(1, 2) == Point(x=1, y=2) == Point(1, y=2, label="origin") == (1, 2, "origin")
    assert Point._fields == ("x", "y", "label") and Point._field_defaults == {"label": "origin"}


@pytest.mark.parametrize("args, kwargs, message", [
    ((1,), {}, "missing required argument: 'y'"),
    ((1, 2, "a", "extra"), {}, "takes 3 arguments but 4 were given"),
    ((1, 2), {"colour": "red"}, "unexpected or repeated arguments: 'colour'"),
    ((1, 2), {"x": 5}, "unexpected or repeated arguments: 'x'"),
])
def test_wrong_arguments_raise_type_error_naming_the_field(args, kwargs, message):
    with pytest.raises(TypeError, match=message):
        Point(*args, **kwargs)


def test_equality_hashing_and_ordering_are_the_tuples():
    assert Point(1, 2) == (1, 2, "origin") and hash(Point(1, 2)) == hash((1, 2, "origin"))
    assert Point(1, 2) < Point(1, 3)
    assert len({Point(1, 2), Point(1, 2, "origin"), Point(2, 1)}) == 2


def test_replace_asdict_make_and_repr():
    point = Point(1, 2)
    moved = point._replace(y=5)
    assert moved == Point(1, 5) and type(moved) is Point and point == Point(1, 2)
    with pytest.raises(TypeError, match="no fields named 'z'"):
        point._replace(z=1)
    assert point._asdict() == {"x": 1, "y": 2, "label": "origin"}
    assert Point._make([3, 4, "q"]) == Point(3, 4, "q")
    with pytest.raises(TypeError, match="expected 3 values, got 2"):
        Point._make([3, 4])
    assert repr(point) == "Point(x=1, y=2, label='origin')"
    assert repr(point).replace("Point", "NamedPoint") == repr(NamedPoint(1, 2))


def test_records_copy_and_pickle_as_themselves():
    point = Point(1, [2, 3])
    assert copy.copy(point) == point
    deep = copy.deepcopy(point)
    assert deep == point and deep.y is not point.y and type(deep) is Point
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(point, protocol))
        assert back == point and type(back) is Point


def test_fields_cannot_be_assigned_and_instances_have_no_dict():
    point = Point(1, 2)
    with pytest.raises(AttributeError):
        point.x = 5
    with pytest.raises(AttributeError):
        point.other = 5
    assert not hasattr(point, "__dict__")


def test_a_record_must_declare_slots():
    with pytest.raises(TypeError, match="declares __slots__"):
        class Loose(Record, fields="a"):
            pass


@pytest.mark.parametrize("fields, defaults", [("a a", ()), ("a", (1, 2))])
def test_malformed_fields_are_refused(fields, defaults):
    with pytest.raises(TypeError, match="fields"):
        class Bad(Record, fields=fields, defaults=defaults):
            __slots__ = ()


def test_a_subclass_keeps_its_parents_fields():
    class Labelled(Point):
        __slots__ = ()

        def __str__(self) -> str:
            return self.label

    assert Labelled(1, 2, "here")._fields == ("x", "y", "label") and str(Labelled(1, 2, "here")) == "here"


def test_match_by_position():
    match Point(1, 2):
        case Point(x, y, label):
            assert (x, y, label) == (1, 2, "origin")
        case _:
            pytest.fail("no match")
