"""Immutable records with named fields: tuples, as ``collections.namedtuple`` makes them, made cheaply.

namedtuple compiles code for every class it makes (about 0.04 ms a class; ``typing.NamedTuple`` about
0.25 ms), and the import path of a warm kernel load defines several such classes: together they cost
more than the load's own work. A Record subclass names its fields as namedtuple does, as class keywords::

    class Compute(Record, fields="backend version", defaults=(None,)):
        __slots__ = ()

and is a tuple: unpacking, indexing, comparison, hashing, copying and pickling are the tuple's; fields
read by name; ``_replace``, ``_asdict``, ``_make``, ``_fields`` and ``_field_defaults`` work as
namedtuple's do.
"""

from __future__ import annotations

from operator import itemgetter


class Record(tuple):
    """Base of the records; see the module's docstring."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()
    _field_defaults: dict = {}

    def __init_subclass__(cls, fields: str | None = None, defaults: tuple = (), **kwargs):
        super().__init_subclass__(**kwargs)
        if "__slots__" not in cls.__dict__:  # else every instance would carry a __dict__
            raise TypeError(f"{cls.__name__}: a Record declares __slots__ = ()")
        if fields is None:  # a subclass of a record keeps its fields
            return
        names = tuple(fields.split())
        if len(defaults) > len(names) or len(set(names)) != len(names):
            raise TypeError(f"{cls.__name__}: fields {fields!r} with {len(defaults)} defaults")
        for index, name in enumerate(names):
            setattr(cls, name, property(itemgetter(index), doc=f"Field {index}: {name}"))
        cls._fields = names
        cls._field_defaults = dict(zip(names[len(names) - len(defaults):], defaults))
        cls.__match_args__ = names

    def __new__(cls, *args, **kwargs):
        if kwargs or len(args) != len(cls._fields):
            args = cls._complete(args, kwargs)
        return tuple.__new__(cls, args)

    @classmethod
    def _complete(cls, args: tuple, kwargs: dict) -> tuple:
        """Positional ``args``, then ``kwargs`` by name, then the defaults; TypeError as a function call gives."""
        if len(args) > len(cls._fields):
            raise TypeError(f"{cls.__name__}() takes {len(cls._fields)} arguments but {len(args)} were given")
        values = list(args)
        for name in cls._fields[len(args):]:
            if name in kwargs:
                values.append(kwargs.pop(name))
            elif name in cls._field_defaults:
                values.append(cls._field_defaults[name])
            else:
                raise TypeError(f"{cls.__name__}() missing required argument: {name!r}")
        if kwargs:
            raise TypeError(f"{cls.__name__}() got unexpected or repeated arguments: {', '.join(map(repr, kwargs))}")
        return tuple(values)

    @classmethod
    def _make(cls, iterable):
        """A record from any iterable of its fields' values, in order."""
        values = tuple(iterable)
        if len(values) != len(cls._fields):
            raise TypeError(f"{cls.__name__}: expected {len(cls._fields)} values, got {len(values)}")
        return tuple.__new__(cls, values)

    def _replace(self, **changes):
        """A copy with the named fields changed."""
        values = [changes.pop(name, value) for name, value in zip(self._fields, self)]
        if changes:
            raise TypeError(f"{type(self).__name__}: no fields named {', '.join(map(repr, changes))}")
        return tuple.__new__(type(self), values)

    def _asdict(self) -> dict:
        """{field: value}, in field order."""
        return dict(zip(self._fields, self))

    def __getnewargs__(self) -> tuple:
        return tuple(self)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in zip(self._fields, self))
        return f"{type(self).__name__}({fields})"
