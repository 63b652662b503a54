"""At-rest encryption of stored records: StartStreamEncryption / StopStreamEncryption.

An edge box can be stolen, so an encrypted stream's records are stored sealed with AES-256-GCM
(``cryptography``), never in the clear. Keys come from a local stand-in for KMS, ``KeyStore``: a
JSON file (mode 0600) of 256-bit keys named like KMS keys (a key id is a UUID; a key ARN is
``arn:aws:kms:<region>:<account>:key/<uuid>``) with aliases (``alias/<name>``). The alias
``alias/aws/kinesis`` (Kinesis's AWS-managed key) is created on first use; other keys are
made with ``edge-gateway create-key``. Put the key file somewhere the thief does not get with
the data disk (``[encryption] key_store``: a removable or secrets mount), or it only protects
against reading the SQLite file alone.

A sealed segment payload (see ``segments`` for the plain layout)::

    b"\\xffKE1" | key uuid (16 bytes) | nonce (12 bytes) | AES-GCM(plain payload) + tag (16 bytes)

A plain payload starts with its record count (u32 little-endian, at most 500), which can never
be the marker, so old plain segments and sealed ones live side by side: records written before
StartStreamEncryption or after StopStreamEncryption stay readable, each row says how it was
written. The associated data binds the shard key and first sequence number, so a sealed row
copied to another place in the table fails to open instead of passing as other records.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import struct
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.errors import AwsError
from gateway.kds.settings import change

if TYPE_CHECKING:
    from gateway.kds.api import Call

MARKER = b"\xffKE1"
AWS_MANAGED_ALIAS = "alias/aws/kinesis"
KEY_FILE = "kms-keys.json"
_HEADER = len(MARKER) + 16 + 12
_AAD = struct.Struct("<QQ")
_KEY_ARN = re.compile(r"arn:aws[a-z-]*:kms:[a-z0-9-]*:\d{12}:key/([0-9a-f-]{36})")
_ALIAS_ARN = re.compile(r"arn:aws[a-z-]*:kms:[a-z0-9-]*:\d{12}:(alias/.+)")


class StoredRecordsUnreadable(AwsError):
    """A sealed segment whose key is gone (KMSNotFoundException) or whose bytes were changed."""

    def __init__(self, message: str, code: str = "KMSNotFoundException", status: int = 400) -> None:
        super().__init__(code, message, status)


def kms_not_found(message: str) -> AwsError:
    return AwsError("KMSNotFoundException", message)


class KeyStore:
    """Named 256-bit keys and aliases in one JSON file; thread-safe, written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._keys: dict[str, bytes] = {}
        self._aliases: dict[str, str] = {}
        self._ciphers: dict[bytes, AESGCM] = {}
        self._reload()

    def _reload(self) -> None:
        """Read the file again (``--create-key`` may have added keys while the gateway runs)."""
        if self.path.exists():
            raw = json.loads(self.path.read_text())
            self._keys = {k: base64.b64decode(v) for k, v in raw.get("keys", {}).items()}
            self._aliases = dict(raw.get("aliases", {}))

    def _add(self, alias: str | None, must_be_new: bool) -> str:
        """Add a key (and ``alias`` for it) under the file's lock, on top of what is on disk."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._reload()
            if alias is not None and alias in self._aliases:
                if must_be_new:
                    raise ValueError(f"alias {alias!r} already exists")
                return self._aliases[alias]
            key_id = str(uuid.uuid4())
            self._keys[key_id] = AESGCM.generate_key(bit_length=256)
            if alias is not None:
                self._aliases[alias] = key_id
            tmp = self.path.with_name(self.path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({"keys": {k: base64.b64encode(v).decode() for k, v in self._keys.items()}, "aliases": self._aliases}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            return key_id

    def create_key(self, alias: str | None = None) -> str:
        """A new key's id (and ``alias`` pointing at it); ValueError if the alias is taken or reserved."""
        if alias is not None and (not alias.startswith("alias/") or alias.startswith("alias/aws/") or len(alias) <= 6):
            raise ValueError(f"alias {alias!r} is not an alias/<name> of your own (alias/aws/ is reserved)")
        return self._add(alias, must_be_new=True)

    def resolve(self, key_id: str) -> str:
        """The key uuid ``key_id`` names (uuid, key ARN, alias, alias ARN); KMSNotFoundException if none."""
        match = _KEY_ARN.fullmatch(key_id)
        name = match.group(1) if match else key_id
        alias_match = _ALIAS_ARN.fullmatch(key_id)
        if alias_match:
            name = alias_match.group(1)
        if name == AWS_MANAGED_ALIAS:
            return self._add(name, must_be_new=False)
        for attempt in (0, 1):
            with self._lock:
                found = self._aliases.get(name, name)
                if found in self._keys:
                    return found
                if attempt == 0:
                    self._reload()
        raise kms_not_found(f"Key '{key_id}' does not exist")

    def _cipher(self, key_uuid: bytes) -> AESGCM:
        cipher = self._ciphers.get(key_uuid)
        if cipher is None:
            key = self._keys.get(str(uuid.UUID(bytes=key_uuid)))
            if key is None:
                raise StoredRecordsUnreadable(f"key {uuid.UUID(bytes=key_uuid)} is not in {self.path}")
            cipher = self._ciphers[key_uuid] = AESGCM(key)
        return cipher

    def seal(self, payload: bytes, key_id: str, shard_key: int, first_seq: int) -> bytes:
        raw_id = uuid.UUID(key_id).bytes
        nonce = os.urandom(12)
        head = MARKER + raw_id
        return head + nonce + self._cipher(raw_id).encrypt(nonce, payload, head + _AAD.pack(shard_key, first_seq))

    def open(self, payload: bytes, shard_key: int, first_seq: int) -> bytes:
        """The plain payload of a stored segment (a plain one comes back as it is)."""
        if payload[:4] != MARKER:
            return payload
        head, nonce = payload[:20], payload[20:_HEADER]
        try:
            return self._cipher(head[4:]).decrypt(nonce, payload[_HEADER:], head + _AAD.pack(shard_key, first_seq))
        except InvalidTag as exc:
            raise StoredRecordsUnreadable(f"stored records of shard {shard_key} at {first_seq} fail authentication: altered on disk", "InternalFailure", 500) from exc


async def start_stream_encryption(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    stream = call.stream(p)
    if p["EncryptionType"] != "KMS":
        raise AwsError("InvalidArgumentException", f"EncryptionType {p['EncryptionType']} is not supported by StartStreamEncryption; use KMS.")
    key_uuid = call.store.keys.resolve(p["KeyId"])
    await change(call.store, stream, encryption_type="KMS", key_id=p["KeyId"], key_uuid=key_uuid)
    return {}


async def stop_stream_encryption(call: Call, p: dict[str, Any]) -> dict[str, Any]:
    stream = call.stream(p)
    if p["EncryptionType"] != "KMS":
        raise AwsError("InvalidArgumentException", f"EncryptionType {p['EncryptionType']} is not supported by StopStreamEncryption; use KMS.")
    if stream.settings.encryption_type != "KMS":
        raise AwsError("InvalidArgumentException", f"Stream {stream.name} under account {call.store.account_id} is not encrypted.")
    if call.store.keys.resolve(p["KeyId"]) != stream.settings.key_uuid:
        raise AwsError("InvalidArgumentException", f"KeyId {p['KeyId']} is not the key stream {stream.name} is encrypted with.")
    await change(call.store, stream, encryption_type="NONE", key_id="", key_uuid="")
    return {}


HANDLERS = {
    "StartStreamEncryption": start_stream_encryption,
    "StopStreamEncryption": stop_stream_encryption,
}
