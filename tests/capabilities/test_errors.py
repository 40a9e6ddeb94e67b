from __future__ import annotations

from myspinbot.errors import PermanentError, ServiceError, TransientError


def test_transient_error_defaults() -> None:
    error = TransientError()

    assert (error.code, error.message, error.retryable, error.details) == (
        "transient",
        "transient",
        True,
        {},
    )
    assert isinstance(error, ServiceError)


def test_permanent_error_carries_code_message_and_details() -> None:
    error = PermanentError("out_of_memory", "1024x1024 does not fit", details={"gib": 80})

    assert str(error) == "1024x1024 does not fit"
    assert error.retryable is False
    assert error.to_json() == {
        "message": "1024x1024 does not fit",
        "code": "out_of_memory",
        "details": {"gib": 80},
    }


def test_service_error_retryable_can_be_set() -> None:
    error = ServiceError("rate_limited", "slow down", retryable=True)

    assert (error.code, error.retryable) == ("rate_limited", True)
