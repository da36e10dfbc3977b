from capacity_service.application.circuit_breaker import BreakerState, CircuitBreaker


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def state_of(breaker: CircuitBreaker) -> BreakerState:
    """Read the state afresh: mypy would otherwise keep it narrowed across the calls that change it."""
    return breaker.state


def test_opens_after_consecutive_failures_and_half_opens_for_one_trial() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=2, reset_after_s=5, clock=clock)
    breaker.record_failure()
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    clock.now = 5
    assert breaker.allow()  # the one trial
    assert not breaker.allow()
    breaker.record_failure()  # trial failed: open again, for another 5 s
    assert not breaker.allow()
    clock.now = 10
    assert breaker.allow()
    breaker.record_success()
    assert state_of(breaker) is BreakerState.CLOSED and breaker.allow() and breaker.allow()


def test_a_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker(failure_threshold=2, reset_after_s=5, clock=Clock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
