"""Resource policies: PutResourcePolicy / GetResourcePolicy / DeleteResourcePolicy, enforced.

A stream's policy is an IAM-style JSON document, kept with the stream's settings::

    {"Version": "2012-10-17",
     "Statement": [{"Effect": "Deny", "Principal": {"AWS": "arn:aws:iam::000000000000:user/AKIACAMERA"},
                    "Action": ["kinesis:GetRecords", "kinesis:GetShardIterator"],
                    "Resource": "arn:aws:kinesis:*:*:stream/telemetry"}]}

``Principal`` names access keys of ``[auth] credentials``: ``"*"``, the account
(``arn:aws:iam::<account>:root`` or the bare account id: every key), a user
(``arn:aws:iam::<account>:user/<access key>``) or the bare access key. ``Action`` and
``Resource`` take IAM's ``*`` / ``?`` wildcards. Conditions and ``Not*`` elements are refused.

Evaluation for a signed request, as IAM does within one account: an explicit ``Deny`` in the
stream's policy refuses the call (``AccessDeniedException``); otherwise the call is allowed if the
key's ``[auth] allowed_streams`` let it through *or* an ``Allow`` statement of the policy grants
it. Unsigned requests (a gateway without credentials) have no principal: policies do not apply.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.errors import AwsError, invalid_argument, not_found
from gateway.kds.render import stream_arn
from gateway.kds.settings import change
from gateway.wire import region_of

if TYPE_CHECKING:
    from gateway.kds.api import Call
    from gateway.kds.store import Store, Stream

#: Largest policy document AWS takes, bytes.
MAX_POLICY_BYTES = 20 * 1024
_ELEMENTS = {"Sid", "Effect", "Principal", "Action", "Resource"}


@dataclass(frozen=True)
class Statement:
    effect: str
    principals: tuple[str, ...]
    actions: tuple[str, ...]
    resources: tuple[str, ...]


def _strings(value: Any, what: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) and i for i in items):
        raise invalid_argument(f"Policy document is malformed: {what} must be a string or a non-empty list of strings.")
    return tuple(items)


def parse(text: str) -> list[Statement]:
    """The statements of a policy document; InvalidArgumentException saying what is wrong."""
    if len(text.encode()) > MAX_POLICY_BYTES:
        raise invalid_argument(f"Policy document is larger than {MAX_POLICY_BYTES} bytes.")
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise invalid_argument(f"Policy document is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("Version") != "2012-10-17":
        raise invalid_argument('Policy document is malformed: it must be an object with "Version": "2012-10-17".')
    raw = doc.get("Statement")
    raw = [raw] if isinstance(raw, dict) else raw
    if not isinstance(raw, list) or not raw:
        raise invalid_argument("Policy document is malformed: Statement must be an object or a non-empty list.")
    statements = []
    for s in raw:
        if not isinstance(s, dict) or set(s) - _ELEMENTS:
            extra = sorted(set(s) - _ELEMENTS) if isinstance(s, dict) else []
            raise invalid_argument(f"Policy document is malformed: unsupported statement element(s) {extra}.")
        if s.get("Effect") not in ("Allow", "Deny"):
            raise invalid_argument("Policy document is malformed: Effect must be Allow or Deny.")
        principal = s.get("Principal")
        if isinstance(principal, dict) and set(principal) == {"AWS"}:
            principal = principal["AWS"]
        statements.append(Statement(s["Effect"], _strings(principal, "Principal (\"*\" or {\"AWS\": ...})"), _strings(s.get("Action"), "Action"), _strings(s.get("Resource"), "Resource")))
    return statements


def _principal_matches(patterns: tuple[str, ...], access_key: str, account: str) -> bool:
    names = {"*", account, f"arn:aws:iam::{account}:root", f"arn:aws:iam::{account}:user/{access_key}", access_key}
    return any(p in names for p in patterns)


def decide(statements: list[Statement], access_key: str, account: str, action: str, resource: str) -> str | None:
    """"Deny", "Allow" or None (the policy says nothing about this call)."""
    verdict = None
    action = action.lower()
    for s in statements:
        if not _principal_matches(s.principals, access_key, account):
            continue
        if not any(fnmatch.fnmatchcase(action, a.lower()) for a in s.actions):
            continue
        if not any(fnmatch.fnmatchcase(resource, r) for r in s.resources):
            continue
        if s.effect == "Deny":
            return "Deny"
        verdict = "Allow"
    return verdict


def denied(account: str, access_key: str, action: str, resource: str) -> AwsError:
    return AwsError("AccessDeniedException", f"User: arn:aws:iam::{account}:user/{access_key} is not authorized to perform: {action} on resource: {resource} with an explicit deny in a resource-based policy")


def check(call: Call, stream: Stream, action: str, access_key: str | None) -> None:
    """Refuse ``action`` on ``stream`` if its policy denies it to the request's signer."""
    if access_key is None or not stream.settings.policy:
        return
    arn = call.arn(stream.name)
    if decide(parse(stream.settings.policy), access_key, call.store.account_id, f"kinesis:{action}", arn) == "Deny":
        raise denied(call.store.account_id, access_key, f"kinesis:{action}", arn)


def grants(store: Store) -> Callable[[web.Request, str, str, str, str], bool]:
    """The SigV4 verifier's hook: does a stream's policy Allow what ``allowed_streams`` does not?"""

    def allowed(request: web.Request, access_key: str, service: str, action: str, name: str) -> bool:
        stream = store.streams.get(name)
        if service != "kinesis" or stream is None or not stream.settings.policy:
            return False
        arn = stream_arn(region_of(request.headers), store.account_id, name)
        return decide(parse(stream.settings.policy), access_key, store.account_id, f"kinesis:{action}", arn) == "Allow"

    return allowed


def _stream_of(call: Call, arn: str) -> Stream:
    if "/consumer/" in arn or ":stream/" not in arn:
        raise not_found(f"Resource {arn} not found.")  # consumer, queue and channel policies: not kept here
    return call.stream({"StreamARN": arn})


async def put_resource_policy(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    stream = _stream_of(call, p["ResourceARN"])
    parse(p["Policy"])
    await change(call.store, stream, updating=False, policy=p["Policy"])
    return {}


async def get_resource_policy(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    stream = _stream_of(call, p["ResourceARN"])
    return {"Policy": stream.settings.policy or "{}"}


async def delete_resource_policy(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    stream = _stream_of(call, p["ResourceARN"])
    if not stream.settings.policy:
        raise not_found(f"No resource policy found for resource ARN {p['ResourceARN']}.")
    await change(call.store, stream, updating=False, policy="")
    return {}


HANDLERS = {
    "DeleteResourcePolicy": delete_resource_policy,
    "GetResourcePolicy": get_resource_policy,
    "PutResourcePolicy": put_resource_policy,
}
