from __future__ import annotations

import pytest
import trio
import trio.testing

from rtap_trio.errors import ModelError, RestartsExhaustedError
from rtap_trio.supervisor import RestartPolicy, Supervisor, TaskState


class Flaky:
    """Crashes ``crashes`` times, then returns; records when it ran."""

    def __init__(self, crashes: int) -> None:
        self.crashes = crashes
        self.runs: list[float] = []

    async def __call__(self) -> None:
        self.runs.append(trio.current_time())
        if len(self.runs) <= self.crashes:
            raise RuntimeError(f"crash {len(self.runs)}")


async def test_restarts_with_exponential_backoff(autojump_clock: trio.testing.MockClock) -> None:
    policy = RestartPolicy(max_restarts=5, window_s=60, backoff_initial_s=1, backoff_max_s=3)
    crashed: list[str] = []
    supervisor = Supervisor(policy, on_crash=lambda name, exc: crashed.append(str(exc)))
    task = Flaky(crashes=4)
    start = trio.current_time()
    await supervisor.supervise("flaky", task)
    gaps = [round(b - a, 6) for a, b in zip([start, *task.runs], task.runs, strict=False)]
    assert gaps == [0, 1, 2, 3, 3]  # 1, 2, 4 capped at 3
    assert crashed == ["crash 1", "crash 2", "crash 3", "crash 4"]
    stats = supervisor.statistics()["flaky"]
    assert (stats.starts, stats.crashes, stats.state) == (5, 4, TaskState.FINISHED)


async def test_exhausted_policy_raises(autojump_clock: trio.testing.MockClock) -> None:
    supervisor = Supervisor(RestartPolicy(max_restarts=2, window_s=60, backoff_initial_s=0.5))
    task = Flaky(crashes=100)
    with pytest.raises(RestartsExhaustedError) as info:
        await supervisor.supervise("doomed", task)
    assert len(task.runs) == 3  # first run + 2 restarts
    assert info.value.task == "doomed" and "crash 3" in str(info.value)
    assert supervisor.statistics()["doomed"].state is TaskState.FAILED


async def test_crashes_outside_window_are_forgotten(autojump_clock: trio.testing.MockClock) -> None:
    policy = RestartPolicy(max_restarts=1, window_s=10, backoff_initial_s=0.1)
    supervisor = Supervisor(policy)
    runs = 0

    async def crash_every_20s() -> None:
        nonlocal runs
        runs += 1
        if runs <= 4:
            await trio.sleep(20)
            raise RuntimeError("late crash")

    await supervisor.supervise("slow", crash_every_20s)
    assert runs == 5  # never two crashes within 10 s, so never exhausted


async def test_fatal_errors_are_not_restarted(autojump_clock: trio.testing.MockClock) -> None:
    supervisor = Supervisor(RestartPolicy())
    runs = 0

    async def missing_model() -> None:
        nonlocal runs
        runs += 1
        raise ModelError("no model")

    with pytest.raises(ModelError):
        await supervisor.supervise("stt", missing_model)
    assert runs == 1


async def test_supervise_started_reports_first_start_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    supervisor = Supervisor(RestartPolicy(backoff_initial_s=0.1))
    runs = 0

    async def server(*, task_status: trio.TaskStatus[int]) -> None:
        nonlocal runs
        runs += 1
        task_status.started(1000 + runs)
        if runs < 3:
            raise RuntimeError("listener died")

    async with trio.open_nursery() as nursery:
        port = await nursery.start(supervisor.supervise_started, "server", server)
    assert port == 1001 and runs == 3


async def test_crash_before_first_start_goes_to_caller() -> None:
    supervisor = Supervisor(RestartPolicy())

    async def broken(*, task_status: trio.TaskStatus[None]) -> None:
        raise RuntimeError("cannot start")

    async with trio.open_nursery() as nursery:
        with pytest.raises(RuntimeError, match="cannot start"):
            await nursery.start(supervisor.supervise_started, "broken", broken)


async def test_cancellation_is_not_a_crash(autojump_clock: trio.testing.MockClock) -> None:
    supervisor = Supervisor(RestartPolicy())
    with trio.move_on_after(5):
        await supervisor.supervise("forever", trio.sleep_forever)
    assert supervisor.statistics()["forever"].crashes == 0
