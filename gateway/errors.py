"""Errors the gateway answers with, in the AWS wire shape.

Handlers raise ``AwsError`` (or a helper below); one middleware in ``gateway.app`` turns it
into the response each protocol expects:

    AwsError(code, message, status)
    ├── JSON 1.1 (Kinesis Data Streams):  {"__type": code, "message": ...}, HTTP status
    ├── CBOR 1.1 (KPL/KCL/Java SDK):       the same map, CBOR-encoded
    └── rest-json (Kinesis Video):         x-amzn-ErrorType: code, {"message": ...}

Anything else a handler raises is a bug: it is logged with its traceback and answered as
``InternalFailure`` (HTTP 500) so the client still gets a well-formed error.
"""

from __future__ import annotations


class AwsError(Exception):
    """An error with an AWS error code (the ``__type``), a message and an HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


def validation(message: str) -> AwsError:
    return AwsError("ValidationException", message)


def serialization(message: str) -> AwsError:
    return AwsError("SerializationException", message)


def invalid_argument(message: str) -> AwsError:
    return AwsError("InvalidArgumentException", message)


def not_found(message: str, status: int = 400) -> AwsError:
    return AwsError("ResourceNotFoundException", message, status)


def in_use(message: str, status: int = 400) -> AwsError:
    return AwsError("ResourceInUseException", message, status)


def throughput_exceeded(message: str) -> AwsError:
    return AwsError("ProvisionedThroughputExceededException", message)


def limit_exceeded(message: str, status: int = 400) -> AwsError:
    return AwsError("LimitExceededException", message, status)
