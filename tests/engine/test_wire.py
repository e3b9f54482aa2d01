"""The worker-side wire (backends/_wire.py) on its own: what a worker makes of a task, and
what the caller makes of the reply, with no process in between. The process engine and Dask
both rely on exactly these outcomes."""

from __future__ import annotations

import copyreg
import enum
import pickle
import threading
from typing import Any

import faults
import pytest
from tasks import fail_on, square

import manybrains as mb
from manybrains._remote import RemoteError, RemoteTraceback
from manybrains._serialize import dumps, loads
from manybrains._task import ChunkOutcome, PackedScalars
from manybrains.backends import _wire

HEADER = b"HDR"  # any header: the wire puts the kind in it, then the body after it


class _FailsToLoad:
    """Pickles fine; unpickling it raises, wherever that happens."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (faults.raise_, (ValueError("bad state"),))


def _round_trip(task: tuple[Any, ...], *, chunk: bool = False) -> tuple[int, Any, Any]:
    """Run ``task`` through execute and encode, then decode it: ``(kind, value, error)``."""
    kinds: list[int] = []

    def header(kind: int) -> bytes:
        kinds.append(kind)
        return HEADER

    kind, elapsed, body = _wire.execute(loads, dumps(task))
    frame = _wire.encode(kind, body, header)
    assert frame[:len(HEADER)] == HEADER
    value, error = _wire.decode(kinds[-1], memoryview(frame)[len(HEADER):], "task 7",
                                chunk, elapsed)
    return kinds[-1], value, error


def test_a_call_comes_back_as_its_value() -> None:
    assert _round_trip((square, (7,), {}, None, False)) == (_wire.RESULT, 49, None)


def test_a_raising_call_comes_back_as_its_own_exception_with_the_worker_traceback() -> None:
    kind, _, error = _round_trip((fail_on, (3,), {}, None, False))
    assert kind == _wire.ERROR
    assert type(error) is ValueError and str(error) == "bad input 3"
    assert isinstance(error.__cause__, RemoteTraceback) and "fail_on" in error.__cause__.tb


def test_system_exit_belongs_to_the_task() -> None:
    kind, _, error = _round_trip((faults.raise_, (SystemExit(4),), {}, None, False))
    assert kind == _wire.ERROR and isinstance(error, SystemExit) and error.code == 4


def _rebuild_without_init(kind: type[BaseException], args: tuple[Any, ...]) -> BaseException:
    exc = kind.__new__(kind)
    exc.args = args
    return exc


def test_system_exit_keeps_its_code_when_exceptions_are_rebuilt_without_init(monkeypatch
                                                                             ) -> None:
    # tblib's pickling support does this (importing distributed installs it process-wide).
    monkeypatch.setitem(copyreg.dispatch_table, SystemExit,
                        lambda e: (_rebuild_without_init, (type(e), e.args)))
    assert pickle.loads(pickle.dumps(SystemExit(4))).code is None  # what it does alone
    _, _, error = _round_trip((faults.raise_, (SystemExit(4),), {}, None, False))
    assert isinstance(error, SystemExit) and error.code == 4


def test_an_exception_that_cannot_travel_comes_back_as_a_stand_in() -> None:
    kind, _, error = _round_trip((faults.raise_unpicklable, (), {}, None, False))
    assert kind == _wire.ERROR
    assert isinstance(error, RemoteError) and error.type_name == "faults.Unpicklable"


def test_a_chunk_comes_back_as_its_outcome_up_to_the_failing_item() -> None:
    kind, outcome, error = _round_trip((fail_on, (), {}, [1, 2, 3, 4], False), chunk=True)
    assert kind == _wire.RESULT and error is None
    assert isinstance(outcome, ChunkOutcome) and outcome.values == [1, 2]
    assert isinstance(outcome.error, ValueError)
    assert isinstance(outcome.error.__cause__, RemoteTraceback)


def test_a_task_that_cannot_be_unpickled_fails_as_unpickling_failed_and_its_cause() -> None:
    broken = (faults.identity, (_FailsToLoad(),), {}, None, False)
    kind, _, error = _round_trip(broken)
    assert kind == _wire.BAD_TASK
    assert isinstance(error, mb.UnpicklingFailed) and isinstance(error, ValueError)
    assert "task 7" in str(error) and "could not unpickle the task" in str(error)


def test_a_result_that_cannot_be_pickled_fails_as_serialization_error_and_its_cause() -> None:
    kind, _, error = _round_trip((threading.Lock, (), {}, None, False))
    assert kind == _wire.BAD_RESULT
    assert isinstance(error, mb.SerializationError) and isinstance(error, TypeError)
    assert "task 7: cannot pickle the result (lock)" in str(error)
    assert isinstance(error.__cause__, RemoteTraceback)


def test_a_reply_that_cannot_be_unpickled_fails_that_task_alone() -> None:
    value, error = _wire.decode(_wire.RESULT, pickle.dumps(faults.BreaksInParent()), "task 7")
    assert value is None
    assert isinstance(error, mb.UnpicklingFailed)
    assert "cannot unpickle the result of task 7" in str(error)


@pytest.mark.parametrize("kind", [_wire.ERROR, _wire.BAD_TASK])
def test_an_error_body_decodes_as_an_error(kind: int) -> None:
    body = dumps(_wire.error_body(KeyError("k")))
    value, error = _wire.decode(kind, body, "task 7")
    assert value is None and isinstance(error, KeyError)


# ---- numpy scalars travel back as one array -------------------------------------------------


def test_a_chunk_of_numpy_scalars_of_one_type_travels_as_one_array_and_comes_back_as_scalars():
    np = pytest.importorskip("numpy")
    items = np.arange(1000, dtype=np.int32)
    _, body = _wire.execute(loads, dumps((square, (), {}, items, False)))[0::2]
    assert isinstance(body[0], PackedScalars)  # one array, not 1,000 pickled scalars
    assert len(pickle.dumps(body)) < 4200 + 500
    _, outcome, error = _round_trip((square, (), {}, items, False), chunk=True)
    assert error is None and outcome.error is None
    assert outcome.values == [x * x for x in items]
    assert {type(v) for v in outcome.values} == {np.int32}  # the same type as a plain loop


@pytest.mark.parametrize("values", [
    pytest.param(lambda np: [np.int64(1), np.float64(2.5)], id="two-types"),
    pytest.param(lambda np: [np.int64(1), 2], id="numpy-and-int"),
    pytest.param(lambda np: [np.str_("a"), np.str_("b")], id="strings"),
    pytest.param(lambda np: [1, 2, 3], id="ints"),
    pytest.param(lambda np: [], id="empty"),
])
def test_only_numbers_and_booleans_of_one_numpy_type_are_packed(values):
    np = pytest.importorskip("numpy")
    given = values(np)
    packed = PackedScalars.pack(given)
    assert packed is given  # left as they are: nothing to gain, or types to lose
    assert PackedScalars.unpack(packed) is given


@pytest.mark.parametrize("dtype", ["float32", "float64", "int8", "uint64", "bool_",
                                   "complex128"])
def test_packed_scalars_keep_their_type_and_value(dtype):
    np = pytest.importorskip("numpy")
    kind = getattr(np, dtype)
    given = [kind(v) for v in (0, 1, 1, 0, 1)]
    packed = PackedScalars.pack(given)
    assert isinstance(packed, PackedScalars)
    back = PackedScalars.unpack(pickle.loads(pickle.dumps(packed)))
    assert back == given and all(type(v) is kind for v in back)


def test_a_chunk_of_plain_ints_travels_as_one_array_and_comes_back_as_ints():
    items = range(-500, 1500)
    _, body = _wire.execute(loads, dumps((square, (), {}, items, False)))[0::2]
    assert isinstance(body[0], PackedScalars)
    assert len(pickle.dumps(body)) < 8 * 2000 + 500  # 8 bytes an int
    _, outcome, error = _round_trip((square, (), {}, items, False), chunk=True)
    assert error is None and outcome.values == [x * x for x in items]
    assert {type(v) for v in outcome.values} == {int}


class Level(enum.IntEnum):
    LOW = 1


@pytest.mark.parametrize("values", [
    pytest.param([True, False] * 100, id="bools"),
    pytest.param([1] * 100 + [True], id="ints-and-a-bool"),
    pytest.param([Level.LOW] * 100, id="int-enum"),
    pytest.param([1] * 100 + [2**63], id="past-64-bits"),
    pytest.param([1] * 100 + [1.0], id="ints-and-a-float"),
    pytest.param(list(range(10)), id="few"),
])
def test_ints_are_packed_only_where_nothing_is_lost(values):
    packed = PackedScalars.pack(values)
    assert packed is values
    assert PackedScalars.unpack(packed) is values
