"""Splits read once per process while a study runs its grid, instead of once per run.

A study runs its runs one after another in one process, and each run reads every training and test set
it names from disk: each of the quick study's 22 runs reads Lucchi++'s 330 slices of 768 x 1024 and VNC's
test slices, 7 s a run here (``python benchmarks/split_memo.py``). Inside :func:`splits_kept_in_memory`,
:func:`emfm.data.load_split` keeps what it read and hands later callers the same slices again. Outside it
(a single ``emfm train``, the API) nothing is kept.

Each caller gets its own copy (the stack, its lists and its arrays): copying the arrays costs a few
percent of reading them, and no run can hand the next one slices it altered in place. What is kept is
bounded (:data:`MAX_BYTES`, least recently used out first), so a grid over many large folders holds no
more than that besides what its runs hold.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator

from emfm.data._stack import SliceStack

#: The most bytes of slices kept at once (images and masks); the least recently used go first.
MAX_BYTES = 4 * 2**30

_lock = threading.RLock()
_kept: OrderedDict[Hashable, SliceStack] | None = None


@contextlib.contextmanager
def splits_kept_in_memory() -> Iterator[None]:
    """While inside, :func:`emfm.data.load_split` reads each split from disk once (nested: the outer keeps)."""
    global _kept
    with _lock:
        outer = _kept
        if outer is None:
            _kept = OrderedDict()
    try:
        yield
    finally:
        with _lock:
            _kept = outer


def active() -> bool:
    """Whether splits are being kept (inside :func:`splits_kept_in_memory`)."""
    return _kept is not None


def _nbytes(stack: SliceStack) -> int:
    return sum(a.nbytes for a in stack.images) + sum(m.nbytes for m in stack.masks)


def _copy(stack: SliceStack) -> SliceStack:
    """A stack of its own: lists, arrays and meta copied."""
    return dataclasses.replace(stack, ids=list(stack.ids), images=[a.copy() for a in stack.images],
                               masks=[m.copy() for m in stack.masks], meta=copy.deepcopy(stack.meta))


def remembered(key: Hashable, load: Callable[[], SliceStack]) -> SliceStack:
    """``load()``, or what it returned for ``key`` before, while :func:`splits_kept_in_memory` is active."""
    with _lock:
        kept = _kept
        if kept is None:
            return load()
        if key in kept:
            kept.move_to_end(key)
            return _copy(kept[key])
    stack = load()  # outside the lock: reading is the slow part, and two threads reading alike is harmless
    if _nbytes(stack) > MAX_BYTES:
        return stack
    with _lock:
        kept[key] = stack
        while sum(_nbytes(s) for s in kept.values()) > MAX_BYTES:
            kept.popitem(last=False)
    return _copy(stack)  # the kept stack stays private, as it came from disk
