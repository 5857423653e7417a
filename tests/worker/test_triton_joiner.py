"""Joining a worker's concurrent scorings into one Triton request (``serving.client``).

The joining logic is tested against a recording ``send``; the same client against the real
Triton is in tests/serving/test_triton_serving.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from moderation import contract
from serving.client import InferenceResult, InferenceUnavailable, _Joiner

WAIT_S = 10.0


def _image(value: int) -> np.ndarray:
    """One image whose logit under :class:`Recorder` is ``value``."""
    return np.full((1, *contract.INPUT_SHAPE), value, dtype=np.uint8)


class Recorder:
    """A ``send`` answering each image's first pixel as its logit; the first call can be held."""

    def __init__(self, *, hold_first: bool = False, error: Exception | None = None) -> None:
        self.calls: list[list[int]] = []
        self.release = threading.Event()
        self.entered = threading.Event()
        self.hold_first = hold_first
        self.error = error

    def __call__(self, images: np.ndarray) -> InferenceResult:
        self.calls.append([int(v) for v in images[:, 0, 0, 0]])
        if self.hold_first and len(self.calls) == 1:
            self.entered.set()
            assert self.release.wait(WAIT_S)
        if self.error is not None:
            raise self.error
        return InferenceResult(images[:, 0, 0, 0].astype(np.float32), "m", "3")


def _in_threads(calls: list[Callable[[], object]]) -> tuple[list[object], list[threading.Thread]]:
    outcomes: list[object] = [None] * len(calls)

    def run(index: int) -> None:
        try:
            outcomes[index] = calls[index]()
        except Exception as exc:  # the outcome under test
            outcomes[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    return outcomes, threads


def _wait_queued(joiner: _Joiner, count: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while len(joiner._queue) < count:
        assert time.monotonic() < deadline, f"expected {count} queued callers"
        time.sleep(0.001)


def _join(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(WAIT_S)
    assert not any(thread.is_alive() for thread in threads)


def test_a_lone_call_is_sent_at_once_as_it_is() -> None:
    send = Recorder()
    result = _Joiner(send, max_images=8).infer(_image(7))
    assert send.calls == [[7]]
    assert result.logits.tolist() == [7.0] and result.model_version == "3"


def test_calls_arriving_while_a_request_is_in_flight_go_together_and_get_their_own_rows() -> None:
    send = Recorder(hold_first=True)
    joiner = _Joiner(send, max_images=8)
    first, first_threads = _in_threads([lambda: joiner.infer(_image(1))])
    assert send.entered.wait(WAIT_S)
    values = [10, 20, 30, 40, 50]
    later, threads = _in_threads([lambda v=v: joiner.infer(_image(v)) for v in values])
    _wait_queued(joiner, len(values))
    send.release.set()
    _join(first_threads + threads)
    assert send.calls[0] == [1]
    assert sorted(send.calls[1]) == values and len(send.calls) == 2  # one request for the five
    for value, outcome in zip(values, later, strict=True):
        assert isinstance(outcome, InferenceResult)
        assert outcome.logits.tolist() == [float(value)] and outcome.model_version == "3"
    assert isinstance(first[0], InferenceResult) and first[0].logits.tolist() == [1.0]


def test_a_batch_never_exceeds_max_images_and_keeps_arrival_order() -> None:
    send = Recorder(hold_first=True)
    joiner = _Joiner(send, max_images=3)
    _, first_threads = _in_threads([lambda: joiner.infer(_image(1))])
    assert send.entered.wait(WAIT_S)
    threads: list[threading.Thread] = []
    for value in (2, 3, 4, 5, 6, 7, 8):  # one at a time, so the queue order is known
        threads += _in_threads([lambda v=value: joiner.infer(_image(v))])[1]
        _wait_queued(joiner, value - 1)
    send.release.set()
    _join(first_threads + threads)
    assert send.calls == [[1], [2, 3, 4], [5, 6, 7], [8]]


def test_multi_image_calls_are_joined_whole() -> None:
    send = Recorder(hold_first=True)
    joiner = _Joiner(send, max_images=4)
    _, first_threads = _in_threads([lambda: joiner.infer(_image(1))])
    assert send.entered.wait(WAIT_S)
    pair = np.concatenate([_image(2), _image(3)])
    outcomes, threads = _in_threads([lambda: joiner.infer(pair)])
    _wait_queued(joiner, 1)
    more, more_threads = _in_threads([lambda: joiner.infer(np.concatenate([_image(4)] * 3))])
    _wait_queued(joiner, 2)
    send.release.set()
    _join(first_threads + threads + more_threads)
    assert send.calls == [[1], [2, 3], [4, 4, 4]]  # 2 + 3 rows would exceed 4
    assert outcomes[0].logits.tolist() == [2.0, 3.0]  # type: ignore[attr-defined]
    assert more[0].logits.tolist() == [4.0, 4.0, 4.0]  # type: ignore[attr-defined]


def test_an_error_reaches_every_caller_of_the_batch_and_the_next_batch_still_runs() -> None:
    down = InferenceUnavailable("Triton did not answer")
    send = Recorder(hold_first=True, error=down)
    joiner = _Joiner(send, max_images=8)
    first, first_threads = _in_threads([lambda: joiner.infer(_image(1))])
    assert send.entered.wait(WAIT_S)
    later, threads = _in_threads([lambda v=v: joiner.infer(_image(v)) for v in (2, 3)])
    _wait_queued(joiner, 2)
    send.release.set()
    _join(first_threads + threads)
    assert first == [down] and later == [down, down]
    send.error = None
    assert joiner.infer(_image(9)).logits.tolist() == [9.0]  # nothing left stuck


def test_an_interrupted_leader_tells_its_batch_and_reraises() -> None:
    class Interrupt(BaseException):
        pass

    def send(images: np.ndarray) -> InferenceResult:
        raise Interrupt()

    joiner = _Joiner(send, max_images=8)
    with pytest.raises(Interrupt):
        joiner.infer(_image(1))
    assert not joiner._busy and not joiner._queue


def test_with_two_requests_allowed_in_flight_the_second_caller_goes_at_once() -> None:
    """One Triton instance busy, the other idle: no waiting; both busy: the rest join."""
    entered: list[list[int]] = []
    release = threading.Event()
    two_in = threading.Event()

    def send(images: np.ndarray) -> InferenceResult:
        entered.append([int(v) for v in images[:, 0, 0, 0]])
        if len(entered) == 2:
            two_in.set()
        if len(entered) <= 2:
            assert release.wait(WAIT_S)
        return InferenceResult(images[:, 0, 0, 0].astype(np.float32), "m", "1")

    joiner = _Joiner(send, max_images=8, in_flight=lambda: 2)
    _, first = _in_threads([lambda: joiner.infer(_image(1)), lambda: joiner.infer(_image(2))])
    assert two_in.wait(WAIT_S)  # both sent without waiting for each other
    later, threads = _in_threads([lambda v=v: joiner.infer(_image(v)) for v in (3, 4, 5)])
    _wait_queued(joiner, 3)
    release.set()
    _join(first + threads)
    assert sorted(map(sorted, entered[:2])) == [[1], [2]]
    assert sorted(v for call in entered[2:] for v in call) == [3, 4, 5]
    assert len(entered) <= 4 and any(len(call) > 1 for call in entered[2:])
    assert [r.logits.tolist() for r in later] == [[3.0], [4.0], [5.0]]  # type: ignore[attr-defined]


def test_a_failing_limit_lookup_queues_nothing() -> None:
    def no_server() -> int:
        raise InferenceUnavailable("Triton did not answer")

    joiner = _Joiner(Recorder(), max_images=8, in_flight=no_server)
    with pytest.raises(InferenceUnavailable):
        joiner.infer(_image(1))
    assert not joiner._queue and joiner._busy == 0


def test_many_callers_with_two_in_flight_all_get_their_own_answer() -> None:
    """A stress run of the leader hand-over: every caller answered, nothing left in flight."""

    def send(images: np.ndarray) -> InferenceResult:
        time.sleep(0.001)
        return InferenceResult(images[:, 0, 0, 0].astype(np.float32), "m", "1")

    joiner = _Joiner(send, max_images=4, in_flight=lambda: 2)
    values = [v % 250 for v in range(400)]

    def caller(k: int) -> list[float]:
        return [float(joiner.infer(_image(v)).logits[0]) for v in values[k::16]]

    outcomes, threads = _in_threads([lambda k=k: caller(k) for k in range(16)])
    _join(threads)
    for k, outcome in enumerate(outcomes):
        assert outcome == [float(v) for v in values[k::16]]
    assert joiner._busy == 0 and not joiner._queue
