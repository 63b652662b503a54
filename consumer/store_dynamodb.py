"""The lease store for workers on many hosts: a DynamoDB table in the KCL's lease-table layout.

One item per shard, hash key ``leaseKey`` (S); the other attributes are the KCL's, so a KCL
application and this library read each other's tables: ``leaseOwner`` (S, absent when free),
``leaseCounter`` (N), ``ownerSwitchesSinceCheckpoint`` (N), ``checkpoint`` (S),
``checkpointSubSequenceNumber`` (N), ``parentShardId`` and ``childShardIds`` (SS),
``startingHashKey`` / ``endingHashKey`` (S) and ``checkpointOwner`` (S, during a graceful
hand-off). The table is created on demand (PAY_PER_REQUEST), as the KCL does.

Every mutation is one ``UpdateItem``/``PutItem`` with a ``ConditionExpression`` (on
``leaseCounter``, ``leaseOwner`` or ``checkpointOwner``); ``ConditionalCheckFailedException``
means another worker changed the lease first and is answered as "no" (None/False), never
raised. Reads are strongly consistent. Other botocore errors become ``LeaseStoreError``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from consumer.errors import LeaseStoreError
from consumer.leases import Lease, LeaseStore

#: Seconds to wait for a new table to become ACTIVE.
TABLE_ACTIVE_TIMEOUT = 60.0
_ONE = {"N": "1"}


def _item(item: dict[str, Any]) -> Lease:
    def s(name: str) -> str | None:
        return item[name]["S"] if name in item else None

    def n(name: str) -> int:
        return int(item[name]["N"]) if name in item else 0

    return Lease(key=item["leaseKey"]["S"], owner=s("leaseOwner"), counter=n("leaseCounter"), checkpoint=s("checkpoint") or "TRIM_HORIZON",
                 checkpoint_sub=n("checkpointSubSequenceNumber"), owner_switches=n("ownerSwitchesSinceCheckpoint"),
                 parents=tuple(sorted(item.get("parentShardId", {}).get("SS", []))),
                 children=tuple(sorted(item.get("childShardIds", {}).get("SS", []))),
                 checkpoint_owner=s("checkpointOwner"), starting_hash_key=s("startingHashKey"), ending_hash_key=s("endingHashKey"))


class DynamoDBLeaseStore(LeaseStore):
    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table

    @classmethod
    def from_session(cls, session: Any, table: str, region: str, endpoint_url: str | None = None) -> "DynamoDBLeaseStore":
        config = Config(retries={"total_max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=10)
        return cls(session.create_client("dynamodb", region_name=region, endpoint_url=endpoint_url, config=config), table)

    def _call(self, operation: str, **args: Any) -> dict[str, Any] | None:
        """One API call; None when its condition failed."""
        try:
            result: dict[str, Any] = getattr(self.client, operation)(TableName=self.table, **args)
            return result
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return None
            raise LeaseStoreError(f"DynamoDB {operation} on {self.table}: {exc}") from exc
        except BotoCoreError as exc:
            raise LeaseStoreError(f"DynamoDB {operation} on {self.table}: {exc}") from exc

    def _update(self, key: str, expression: str, condition: str, values: dict[str, Any],
                names: dict[str, str] | None = None) -> Lease | None:
        args: dict[str, Any] = {"Key": {"leaseKey": {"S": key}}, "UpdateExpression": expression,
                                "ConditionExpression": f"attribute_exists(leaseKey) AND ({condition})", "ReturnValues": "ALL_NEW"}
        if values:
            args["ExpressionAttributeValues"] = values
        if names:
            args["ExpressionAttributeNames"] = names
        result = self._call("update_item", **args)
        return _item(result["Attributes"]) if result is not None else None

    def ensure_table(self) -> None:
        try:
            self.client.describe_table(TableName=self.table)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise LeaseStoreError(f"DynamoDB DescribeTable {self.table}: {exc}") from exc
            try:
                self.client.create_table(TableName=self.table, BillingMode="PAY_PER_REQUEST",
                                         AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
                                         KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}])
            except ClientError as create_exc:  # another worker created it first
                if create_exc.response.get("Error", {}).get("Code") != "ResourceInUseException":
                    raise LeaseStoreError(f"DynamoDB CreateTable {self.table}: {create_exc}") from create_exc
        except BotoCoreError as exc:
            raise LeaseStoreError(f"DynamoDB DescribeTable {self.table}: {exc}") from exc
        self._wait_active()

    def _wait_active(self, sleep: Callable[[float], None] = time.sleep) -> None:
        deadline = time.monotonic() + TABLE_ACTIVE_TIMEOUT
        while True:
            status = (self._call("describe_table") or {}).get("Table", {}).get("TableStatus")
            if status == "ACTIVE":
                return
            if time.monotonic() > deadline:
                raise LeaseStoreError(f"DynamoDB table {self.table} not ACTIVE after {TABLE_ACTIVE_TIMEOUT:.0f}s (status {status})")
            sleep(0.1)

    def list_leases(self) -> list[Lease]:
        leases: list[Lease] = []
        args: dict[str, Any] = {"ConsistentRead": True}
        while True:
            page = self._call("scan", **args) or {}
            leases += [_item(i) for i in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return sorted(leases, key=lambda lease: lease.key)
            args["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def get(self, key: str) -> Lease | None:
        result = self._call("get_item", Key={"leaseKey": {"S": key}}, ConsistentRead=True) or {}
        return _item(result["Item"]) if "Item" in result else None

    def create(self, lease: Lease) -> bool:
        item: dict[str, Any] = {"leaseKey": {"S": lease.key}, "leaseCounter": {"N": str(lease.counter)},
                                "checkpoint": {"S": lease.checkpoint}, "checkpointSubSequenceNumber": {"N": str(lease.checkpoint_sub)},
                                "ownerSwitchesSinceCheckpoint": {"N": str(lease.owner_switches)}}
        for name, value in (("leaseOwner", lease.owner), ("checkpointOwner", lease.checkpoint_owner),
                            ("startingHashKey", lease.starting_hash_key), ("endingHashKey", lease.ending_hash_key)):
            if value is not None:
                item[name] = {"S": value}
        for name, values in (("parentShardId", lease.parents), ("childShardIds", lease.children)):
            if values:  # DynamoDB has no empty sets
                item[name] = {"SS": list(values)}
        return self._call("put_item", Item=item, ConditionExpression="attribute_not_exists(leaseKey)") is not None

    def renew(self, lease: Lease) -> Lease | None:
        if lease.owner is None:
            return None
        return self._update(lease.key, "SET leaseCounter = leaseCounter + :one", "leaseOwner = :owner AND leaseCounter = :counter",
                            {":one": _ONE, ":owner": {"S": lease.owner}, ":counter": {"N": str(lease.counter)}})

    def take(self, lease: Lease, owner: str, handoff_from: str | None = None) -> Lease | None:
        values = {":one": _ONE, ":owner": {"S": owner}, ":counter": {"N": str(lease.counter)}, ":zero": {"N": "0"}}
        expression = ("SET leaseOwner = :owner, leaseCounter = leaseCounter + :one, "
                      "ownerSwitchesSinceCheckpoint = if_not_exists(ownerSwitchesSinceCheckpoint, :zero) + :one")
        if handoff_from is not None:
            expression += ", checkpointOwner = :previous"
            values[":previous"] = {"S": handoff_from}
        else:
            expression += " REMOVE checkpointOwner"
        return self._update(lease.key, expression, "leaseCounter = :counter", values)

    def finish_handoff(self, key: str, previous_owner: str) -> bool:
        return self._update(key, "REMOVE checkpointOwner", "checkpointOwner = :previous", {":previous": {"S": previous_owner}}) is not None

    def release(self, lease: Lease) -> bool:
        if lease.owner is None:
            return False
        return self._update(lease.key, "SET leaseCounter = leaseCounter + :one REMOVE leaseOwner", "leaseOwner = :owner",
                            {":one": _ONE, ":owner": {"S": lease.owner}}) is not None

    def checkpoint(self, key: str, worker: str, checkpoint: str, sub: int = 0, children: tuple[str, ...] | None = None) -> bool:
        values: dict[str, Any] = {":cp": {"S": checkpoint}, ":sub": {"N": str(sub)}, ":zero": {"N": "0"}, ":worker": {"S": worker}}
        expression = "SET #cp = :cp, checkpointSubSequenceNumber = :sub, ownerSwitchesSinceCheckpoint = :zero"
        if children:
            expression += ", childShardIds = :children"
            values[":children"] = {"SS": list(children)}
        condition = "(attribute_not_exists(checkpointOwner) AND leaseOwner = :worker) OR checkpointOwner = :worker"
        return self._update(key, expression, condition, values, names={"#cp": "checkpoint"}) is not None

    def delete(self, key: str) -> None:
        self._call("delete_item", Key={"leaseKey": {"S": key}})

    def close(self) -> None:
        self.client.close()

