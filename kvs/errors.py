"""Errors of the video library.

    MkvError(error_id, message)   an MKV stream the parser refuses; ``error_id`` is the
                                  Kinesis Video PutMedia ErrorId the gateway acks with:
        4006  invalid MKV data / garbage / element over a size limit
        4010  a block for a track the Tracks element does not declare
        4011  a cluster with no frames
"""

from __future__ import annotations

INVALID_MKV_DATA = 4006
TRACK_NUMBER_MISMATCH = 4010
FRAGMENT_WITHOUT_FRAMES = 4011


class MkvError(ValueError):
    """The stream is not MKV we can accept; ``error_id`` follows the PutMedia error codes."""

    def __init__(self, error_id: int, message: str) -> None:
        super().__init__(f"{error_id}: {message}")
        self.error_id = error_id
        self.message = message
