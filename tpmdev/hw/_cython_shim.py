"""Stand-in for Cython's pure-Python mode API, for running the hot modules without Cython.

The hot modules in this package are typed Python that Cython compiles. They
name C types and compiler hints through the ``cython`` module
(``n: cython.int``, ``@cython.cclass``). Cython is a build tool, not a runtime
dependency, so where it is not installed each hot module binds the name
``cython`` to this module instead, always in the same four lines::

    try:
        import cython
    except ImportError:  # Cython builds the package; the pure variant runs without it
        from tpmdev.hw import _cython_shim as cython

When Cython compiles a module it resolves ``import cython`` at compile time
and drops the ``except`` branch, so the compiled module never sees this file.
Nothing here is put in ``sys.modules`` as ``cython``: other code that imports
Cython still finds out truthfully whether it is installed.

This is the subset of Cython's ``Shadow`` module (what ``import cython`` gives
in plain Python) that the hot modules use or are expected to use, with the
same meaning: C integer types are Python ``int`` (no wrap-around: the sources
mask to 32 bits explicitly where C would wrap), decorators and directives
change nothing. ``tests/test_build.py`` checks that every ``cython.<name>``
a hot module uses is here and also in Cython's own module. Add a name here
when a hot module starts to use it.
"""

from __future__ import annotations

import builtins
from types import TracebackType
from typing import Any, Callable, Optional, TypeVar

__all__ = [
    "compiled",
    # C types
    "bint",
    "char",
    "uchar",
    "short",
    "ushort",
    "int",
    "uint",
    "long",
    "ulong",
    "longlong",
    "ulonglong",
    "Py_ssize_t",
    "size_t",
    "float",
    "double",
    # decorators
    "cclass",
    "cfunc",
    "ccall",
    "inline",
    "final",
    "locals",
    "returns",
    "exceptval",
    # directives (decorators or context managers)
    "boundscheck",
    "wraparound",
    "cdivision",
    "initializedcheck",
    "annotation_typing",
    "binding",
    # functions
    "cast",
    "declare",
    "address",
]

_T = TypeVar("_T")

#: False: this is the uncompiled variant (a compiled module sees True).
compiled = False

# C types, as Python sees them. Integer widths are not emulated.
bint = builtins.bool
char = uchar = short = ushort = builtins.int
int = uint = long = ulong = longlong = ulonglong = builtins.int
Py_ssize_t = size_t = builtins.int
float = double = builtins.float


def _identity(obj: _T) -> _T:
    return obj


#: ``@cython.cclass``: an extension type when compiled, an ordinary class here.
cclass = _identity
#: ``@cython.cfunc``: a C function when compiled, an ordinary one here.
cfunc = _identity
#: ``@cython.ccall``: a C function with a Python wrapper when compiled.
ccall = _identity
#: ``@cython.inline``: a hint to the C compiler.
inline = _identity
#: ``@cython.final``: no subclass overrides (a hint to Cython).
final = _identity


def locals(**types: Any) -> Callable[[_T], _T]:
    """``@cython.locals(n=cython.int)``: local variable types; nothing in Python."""
    return _identity


def returns(type: Any) -> Callable[[_T], _T]:
    """``@cython.returns(cython.int)``: the C return type; nothing in Python."""
    return _identity


def exceptval(value: Any = None, *, check: builtins.bool = True) -> Callable[[_T], _T]:
    """``@cython.exceptval(-1)``: the C error return value; nothing in Python."""
    return _identity


class _Directive:
    """A compiler directive, usable as a decorator or a ``with`` block; does nothing in Python."""

    def __init__(self, _value: builtins.bool = True) -> None:
        pass

    def __call__(self, obj: _T) -> _T:
        return obj

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        return None


boundscheck = wraparound = cdivision = initializedcheck = annotation_typing = binding = _Directive


def cast(type: Any, value: Any, typecheck: builtins.bool = False) -> Any:
    """``cython.cast(cython.int, x)``: *value* converted by calling *type* if it is not one already."""
    if isinstance(type, builtins.type) and value is not None and not isinstance(value, type):
        return type(value)
    return value


_UNSET: Any = object()


def declare(type: Any = None, value: Any = _UNSET, **attributes: Any) -> Any:
    """``x = cython.declare(cython.int, 0)``: the value, cast; None without a value."""
    if value is not _UNSET:
        return cast(type, value)
    return None


def address(obj: _T) -> _T:
    """``cython.address(x)``: a C pointer to *x* when compiled; the object
    itself here (only code under ``if cython.compiled:`` takes addresses)."""
    return obj
