"""The gateway's fast SigV4 canonical request is botocore's, byte for byte, wherever it applies; and
requests botocore signs verify (tampered ones do not). In-process: this is pure string work."""

from __future__ import annotations

import datetime

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from fuzz_support import SCALE
from gateway.sigv4 import Scope, botocore_canonical_request, fast_canonical_request, signature_matches

SETTINGS = settings(max_examples=80 * SCALE, deadline=None, database=None, suppress_health_check=list(HealthCheck))
NAMES = st.from_regex(r"x-[a-z0-9-]{1,12}", fullmatch=True)
VALUES = st.from_regex(r"[ \t!-~]{0,40}", fullmatch=True)  # what an HTTP header value can carry
PATHS = st.one_of(st.sampled_from(["/", "/putMedia", "/getHLSStreamingSessionURL", "/a/b", "/a//b", "/a/./b", "/a/../b", "/%41", "/x?y=1"]),
                  st.from_regex(r"(/[A-Za-z0-9_.~%-]{0,6}){1,3}", fullmatch=True))
SCOPE = Scope("AKIDEXAMPLE", "secret", "20261123T120000Z", "us-east-1", "kinesis")


@SETTINGS
@given(path=PATHS, headers=st.lists(st.tuples(NAMES, VALUES), min_size=1, max_size=6), payload=st.from_regex(r"[0-9a-f]{64}", fullmatch=True))
def test_fast_canonical_request_is_botocores(path: str, headers: list[tuple[str, str]], payload: str) -> None:
    multi = CIMultiDictProxy(CIMultiDict([("host", "127.0.0.1:4567"), *headers]))
    signed = tuple(sorted({"host", *(name for name, _ in headers)}))
    fast = fast_canonical_request("POST", path, multi, signed, payload)
    if fast is not None:
        assert fast == botocore_canonical_request("POST", path, multi, signed, payload, SCOPE)


@SETTINGS
@given(path=PATHS, extra=st.dictionaries(NAMES, VALUES.map(str.strip).filter(bool), max_size=4), body=st.binary(max_size=300),
       tamper=st.sampled_from(["none", "body", "header", "path"]))
def test_requests_botocore_signs_verify_and_tampered_ones_do_not(path: str, extra: dict[str, str], body: bytes, tamper: str) -> None:
    import hashlib

    request = AWSRequest(method="POST", url=f"http://127.0.0.1:4567{path}", data=body, headers={"Content-Type": "application/json", **extra})
    signer = SigV4Auth(Credentials(SCOPE.access_key, SCOPE.secret), "kinesis", "us-east-1")
    request.context["timestamp"] = SCOPE.amz_date
    signer._modify_request_before_signing(request)  # X-Amz-Date, as add_auth sets it
    request.headers["X-Amz-Date"] = SCOPE.amz_date
    canonical = signer.canonical_request(request)
    signature = signer.signature(signer.string_to_sign(request, canonical), request)
    signed = tuple(sorted(n.lower() for n in signer.headers_to_sign(request)))
    received = CIMultiDict((k.lower(), v) for k, v in signer.headers_to_sign(request).items())
    raw_path = request.url.split("4567", 1)[1]
    payload = hashlib.sha256(body).hexdigest()
    if tamper == "body":
        payload = hashlib.sha256(body + b"!").hexdigest()
    elif tamper == "header":
        received["content-type"] = "application/x-tampered"
    elif tamper == "path":
        raw_path = raw_path + "x"
    ok = signature_matches("POST", raw_path, CIMultiDictProxy(received), signed, payload, SCOPE, signature)
    assert ok == (tamper == "none")


def test_signing_key_cache_follows_the_date() -> None:
    from gateway.sigv4 import signing_key

    today = datetime.date(2026, 11, 23).strftime("%Y%m%d")
    assert signing_key("s", today, "us-east-1", "kinesis") != signing_key("s", "20261124", "us-east-1", "kinesis")
    assert signing_key("s", today, "us-east-1", "kinesis") != signing_key("s", today, "us-east-1", "kinesisvideo")
