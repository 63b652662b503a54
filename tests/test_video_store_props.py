"""Property test of the video store's invariants under random ingest, retention and reopening."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.kvs.store import NewFragment, VideoStore

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.sampled_from(["a", "b"]), st.integers(1, 5000)),
        st.tuples(st.just("budget"), st.sampled_from(["a", "b"]), st.integers(0, 20000)),
        st.tuples(st.just("age"), st.sampled_from(["a", "b"]), st.integers(0, 60)),
        st.tuples(st.just("reopen"), st.just(""), st.just(0)),
        st.tuples(st.just("orphan"), st.sampled_from(["a", "b"]), st.just(0)),
    ),
    max_size=30,
)


def check(store: VideoStore, root: Path, seen: dict[str, list[int]]) -> None:
    on_disk = sorted(p for p in (root / "streams").glob("*/*/*.mkv"))
    listed = 0
    for name in ("a", "b"):
        stream = store.describe(name)
        infos = store.list_fragments(name, limit=10_000)
        numbers = [int(i.fragment_number) for i in infos]
        assert numbers == sorted(set(numbers))  # increasing, unique
        assert store.stream_bytes(stream.id) == sum(i.size for i in infos)
        for info in infos:
            assert len(store.read_fragment(name, info.fragment_number)) == info.size
        # numbers handed out are never handed out again
        assert not set(numbers) - set(seen[name])
        listed += len(infos)
    assert len(on_disk) == listed
    assert list((root / "tmp").iterdir()) == []


@settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(OPS)
def test_index_and_files_stay_consistent(ops: list[tuple[str, str, int]]) -> None:
    root = Path(tempfile.mkdtemp(prefix="video-props-")) / "video"
    store = VideoStore(root)
    try:
        ids = {name: store.create_stream(name).id for name in ("a", "b")}
        seen: dict[str, list[int]] = {"a": [], "b": []}
        clock = 1_700_000_000_000
        for op, name, value in ops:
            if op == "put":
                clock += 1000
                number, stored = store.persist(ids[name], NewFragment(bytes(value), clock, clock, 1000, 1))
                assert stored and all(int(number) > n for n in seen[name])
                seen[name].append(int(number))
            elif op == "budget":
                store.delete_oldest(ids[name], keep_bytes=value)
                assert store.stream_bytes(ids[name]) <= value
            elif op == "age":
                store.delete_oldest(ids[name], older_than_ms=clock - value * 1000)
            elif op == "reopen":
                store.close()
                store = VideoStore(root)
            elif op == "orphan":  # a crash after rename, before commit: a file one past the newest
                path = store._fragment_path(ids[name], store._next_seq[ids[name]])
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"orphan")
                store.close()
                store = VideoStore(root)
            check(store, root, seen)
    finally:
        store.close()
        shutil.rmtree(root.parent, ignore_errors=True)
