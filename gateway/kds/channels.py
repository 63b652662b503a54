"""CreateChannel, DescribeChannel, ListChannels, UpdateChannel, DeleteChannel: the data-stream
API's channels, which ``gateway.firehose.channels`` runs on the Firehose delivery machinery."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.firehose.store import BufferStore
    from gateway.kds.api import Call


def _store(call: Call) -> BufferStore:
    from gateway.firehose import SERVICES  # the firehose package imports this one's: not at module load

    return call.request.app[SERVICES].store


async def create_channel(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    from gateway.firehose import channels

    return await channels.create(_store(call), call.store, p, call.region, call.store.account_id)


async def describe_channel(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    from gateway.firehose import channels

    return channels.describe_one(_store(call), p)


async def list_channels(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    from gateway.firehose import channels

    return channels.list_all(_store(call), p)


async def update_channel(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    from gateway.firehose import channels

    return await channels.update(_store(call), call.store, p, call.store.account_id)


async def delete_channel(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    from gateway.firehose import channels

    return await channels.delete(_store(call), p)


HANDLERS = {
    "CreateChannel": create_channel,
    "DeleteChannel": delete_channel,
    "DescribeChannel": describe_channel,
    "ListChannels": list_channels,
    "UpdateChannel": update_channel,
}
