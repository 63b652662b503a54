"""The operations that change a stream's or the account's settings.

UpdateStreamMode, UpdateMaxRecordSize, UpdateStreamWarmThroughput,
UpdateStreamRecordDistributionStrategy, Enable/DisableEnhancedMonitoring,
Describe/UpdateAccountSettings and the ARN-addressed TagResource / UntagResource /
ListTagsForResource. State and the UPDATING -> ACTIVE transition are in ``settings``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import sqlite3
import time
from typing import TYPE_CHECKING, Any

from gateway.errors import in_use, invalid_argument, limit_exceeded, not_found
from gateway.kds import consumers, control, queues
from gateway.kds.settings import (
    ACCOUNT, COMMITMENT_SECONDS, MIB_PER_SHARD, SHARD_METRICS, UPDATE_SECONDS, AccountSettings, activate, change, encode, live,
    require_active, save,
)

if TYPE_CHECKING:
    from gateway.kds.api import Call
    from gateway.kds.store import Store, Stream


async def update_stream_mode(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    stream = call.stream(p)
    mode = p["StreamModeDetails"]["StreamMode"]
    store = call.store

    def job(conn: sqlite3.Connection) -> None:
        live(store, stream)
        require_active(store, stream)
        if mode == stream.mode:
            raise invalid_argument(f"Stream {stream.name} under account {store.account_id} is already in {mode} mode.")
        if mode == "ON_DEMAND" and sum(s.mode == "ON_DEMAND" for s in store.streams.values()) >= control.ON_DEMAND_STREAM_LIMIT:
            raise limit_exceeded(f"The account {store.account_id} already has {control.ON_DEMAND_STREAM_LIMIT} on-demand streams.")
        if mode == "PROVISIONED" and queues.count_on_stream(conn, stream.key):
            raise in_use(f"Stream {stream.name} under account {store.account_id} has queues: delete them before switching to PROVISIONED.")
        conn.execute("UPDATE streams SET mode=? WHERE key=?", (mode, stream.key))
        stream.mode = mode
        if "WarmThroughputMiBps" in p:
            save(conn, stream, warm_mibps=p["WarmThroughputMiBps"])
        stream.status = "UPDATING"

    await store.run(job)
    asyncio.get_running_loop().call_later(UPDATE_SECONDS, activate, stream)
    return {}


async def update_max_record_size(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    await change(call.store, call.stream(p), max_record_kib=p["MaxRecordSizeInKiB"])
    return {}


async def update_stream_warm_throughput(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    """Warm throughput is what the stream takes at once; an on-demand stream gets the shards
    (1 MiB/s each) to cover it, as AWS pre-scales it."""
    stream = call.stream(p)
    target = p["WarmThroughputMiBps"]
    if stream.mode != "ON_DEMAND":
        raise invalid_argument(f"Warm throughput can only be set on an ON_DEMAND stream; {stream.name} is {stream.mode}.")
    require_active(call.store, stream)
    shards = max(len(stream.open_shards), math.ceil(target / MIB_PER_SHARD))
    if shards > len(stream.open_shards):
        await control.scale_to(call.store, stream, shards, call.region)
    await change(call.store, stream, warm_mibps=target)
    return {"StreamARN": call.arn(stream.name), "StreamName": stream.name, "WarmThroughput": {"TargetMiBps": target, "CurrentMiBps": target}}


async def update_record_distribution(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    await change(call.store, call.stream(p), updating=False, distribution=p["RecordDistributionStrategy"])
    return {}


def _metric_list(names: list[str]) -> set[str]:
    return set(SHARD_METRICS) if "ALL" in names else set(names)


async def _monitoring(call: Call, p: dict[str, Any], enable: bool) -> dict[str, Any]:
    stream = call.stream(p)
    current = stream.settings.metrics
    wanted = _metric_list(p["ShardLevelMetrics"])
    desired = set(current) | wanted if enable else set(current) - wanted
    ordered = tuple(m for m in SHARD_METRICS if m in desired)
    await change(call.store, stream, updating=False, metrics=ordered)
    return {"StreamName": stream.name, "StreamARN": call.arn(stream.name), "CurrentShardLevelMetrics": list(current), "DesiredShardLevelMetrics": list(ordered)}


async def enable_enhanced_monitoring(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    return await _monitoring(call, p, True)


async def disable_enhanced_monitoring(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    return await _monitoring(call, p, False)


def _commitment(call: Call, account: AccountSettings) -> dict[str, Any]:
    out: dict[str, Any] = {"Status": account.commitment}
    if account.commitment != "DISABLED" or account.started:
        out["StartedAt"] = call.codec.ts(account.started)
        out["EarliestAllowedEndAt"] = call.codec.ts(account.started + COMMITMENT_SECONDS)
    if account.commitment == "DISABLED" and account.ended:
        out["EndedAt"] = call.codec.ts(account.ended)
    return out


def _account_now(store: Store) -> AccountSettings:
    """The account's settings with a commitment whose earliest end has passed ended."""
    account = store.account_settings
    if account.commitment == "ENABLED_UNTIL_EARLIEST_ALLOWED_END" and time.time() >= account.started + COMMITMENT_SECONDS:
        account = dataclasses.replace(account, commitment="DISABLED", ended=account.started + COMMITMENT_SECONDS)
    return account


async def describe_account_settings(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    return {"MinimumThroughputBillingCommitment": _commitment(call, _account_now(call.store))}


async def update_account_settings(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    store = call.store
    wanted = p["MinimumThroughputBillingCommitment"]["Status"]

    def job(conn: sqlite3.Connection) -> AccountSettings:
        account = _account_now(store)
        now = time.time()
        if wanted == "ENABLED":
            if account.commitment != "ENABLED":
                account = AccountSettings("ENABLED", now if account.commitment == "DISABLED" else account.started)
        elif account.commitment == "ENABLED":
            early = now < account.started + COMMITMENT_SECONDS
            account = dataclasses.replace(account, commitment="ENABLED_UNTIL_EARLIEST_ALLOWED_END") if early else AccountSettings("DISABLED", account.started, now)
        conn.execute("INSERT OR REPLACE INTO settings(owner, value) VALUES (?, ?)", (ACCOUNT, encode(account)))
        store.account_settings = account
        return account

    account = await store.run(job)
    return {"MinimumThroughputBillingCommitment": _commitment(call, account)}


def resource_stream(call: Call, arn: str) -> Stream:
    """The stream a ResourceARN names (consumers, queues and channels have their own APIs)."""
    if "/consumer/" in arn or ":stream/" not in arn:
        raise not_found(f"Resource {arn} not found.")
    return call.stream({"StreamARN": arn})


async def tag_resource(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    if queues.is_queue_arn(p["ResourceARN"]):
        await queues.tag_queue(call, p["ResourceARN"], p["Tags"], [])
        return {}
    if consumers.is_consumer_arn(p["ResourceARN"]):
        await consumers.tag_consumer(call, p["ResourceARN"], p["Tags"], [])
        return {}
    await control.add_tags(call.store, resource_stream(call, p["ResourceARN"]), p["Tags"])
    return {}


async def untag_resource(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    if queues.is_queue_arn(p["ResourceARN"]):
        await queues.tag_queue(call, p["ResourceARN"], {}, p["TagKeys"])
        return {}
    if consumers.is_consumer_arn(p["ResourceARN"]):
        await consumers.tag_consumer(call, p["ResourceARN"], {}, p["TagKeys"])
        return {}
    await control.remove_tags(call.store, resource_stream(call, p["ResourceARN"]), p["TagKeys"])
    return {}


async def list_tags_for_resource(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    if queues.is_queue_arn(p["ResourceARN"]) or consumers.is_consumer_arn(p["ResourceARN"]):
        arn = p["ResourceARN"]
        tags = queues.queue_tags(call, arn) if queues.is_queue_arn(arn) else consumers.consumer_tags(call, arn)
        return {"Tags": [{"Key": k, "Value": tags[k]} for k in sorted(tags)]}
    stream = resource_stream(call, p["ResourceARN"])
    return {"Tags": [{"Key": k, "Value": stream.tags[k]} for k in sorted(stream.tags)]}


HANDLERS = {
    "DescribeAccountSettings": describe_account_settings,
    "DisableEnhancedMonitoring": disable_enhanced_monitoring,
    "EnableEnhancedMonitoring": enable_enhanced_monitoring,
    "ListTagsForResource": list_tags_for_resource,
    "TagResource": tag_resource,
    "UntagResource": untag_resource,
    "UpdateAccountSettings": update_account_settings,
    "UpdateMaxRecordSize": update_max_record_size,
    "UpdateStreamMode": update_stream_mode,
    "UpdateStreamRecordDistributionStrategy": update_record_distribution,
    "UpdateStreamWarmThroughput": update_stream_warm_throughput,
}
