"""The model adapter: the one module that puts a function on an instance.

A backbone's faster forward (LightGCN's bipartite propagation, a compact
ticket's streamed scoring), PEP's gathered embedding lookup, a frozen KD
teacher's single propagation and RecBole's TensorBoard writer are each a
function put on one object (a model, a submodule, a dataset, RecBole's
trainer module) in place of its own.  They ask here, so what they replace
and how it is put back is in one place (``tests/test_architecture.py``:
no other module assigns a function onto an attribute).
"""
from __future__ import annotations

import types
from contextlib import contextmanager


def bind(instance, name: str, function) -> None:
    """``instance.name`` becomes ``function`` bound to ``instance`` (its first
    argument is the instance), for this instance only: its class, parameters
    and state dict stay as they are."""
    setattr(instance, name, types.MethodType(function, instance))


def put(instance, name: str, function) -> None:
    """``instance.name`` becomes ``function`` as it is (a closure that takes no
    instance argument)."""
    setattr(instance, name, function)


@contextmanager
def swapped(owner, name: str, function):
    """``owner.name`` is ``function`` inside the block; after it, an attribute
    the owner held itself (an instance's own forward, a module's function) is
    put back, and one it took from its class is removed (the class's shows again)."""
    original = getattr(owner, name)
    own = name in vars(owner)
    setattr(owner, name, function)
    try:
        yield
    finally:
        if own:
            setattr(owner, name, original)
        else:
            delattr(owner, name)
