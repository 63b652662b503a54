"""``python -m kvs``: look into MKV fragment files and turn them into an MP4, without a gateway.

examples:
  python -m kvs info body.mkv                     # one line per fragment (cluster)
  python -m kvs mp4 body.mkv -o clip.mp4          # the fragments as one MP4 clip (no re-encoding)
  curl ... getMediaForFragmentList | python -m kvs info -
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import BinaryIO

from kvs import MkvError, MkvStreamParser, ParsedFragment, remux
from kvs.playlist import iso_time

CHUNK = 1 << 16


def fragments(stream: BinaryIO) -> Iterator[ParsedFragment]:
    """Every cluster of an MKV byte stream (documents back to back, any sizes), as it is read."""
    parser = MkvStreamParser()
    while chunk := stream.read(CHUNK):
        yield from parser.feed(chunk)
    last = parser.finish()
    if last is not None:
        if not last.complete:
            print(f"warning: the stream ends inside the fragment at {last.timecode_ms}", file=sys.stderr)
        yield last


def _open(path: str) -> BinaryIO:
    return sys.stdin.buffer if path == "-" else open(path, "rb")


def cmd_info(args: argparse.Namespace) -> int:
    with _open(args.file) as stream:
        for i, f in enumerate(fragments(stream)):
            tags = " ".join(f"{k}={v}" for k, v in sorted(f.tags.items()))
            print(f"{i:5d}  {iso_time(f.timecode_ms)}  {f.duration_ms:6d} ms  {f.frame_count:4d} frames  "
                  f"{f.size:9d} B  {f.codec_id}{'' if f.keyframe else '  (no keyframe first)'}  {tags}".rstrip())
    return 0


def cmd_mp4(args: argparse.Namespace) -> int:
    with _open(args.file) as stream:
        documents = [f.mkv for f in fragments(stream)]
    if not documents:
        print("error: no fragments in the input", file=sys.stderr)
        return 1
    clip = remux.fragments_to_mp4(documents)
    with open(args.output, "wb") as out:
        out.write(clip)
    print(f"{args.output}: {len(documents)} fragments, {len(clip)} bytes")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kvs", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="list the fragments of an MKV stream file ('-' for stdin)")
    info.add_argument("file")
    info.set_defaults(run=cmd_info)
    mp4 = commands.add_parser("mp4", help="remux the fragments of an MKV stream file into one MP4")
    mp4.add_argument("file")
    mp4.add_argument("-o", "--output", required=True)
    mp4.set_defaults(run=cmd_mp4)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except (MkvError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.filename or ''}: {exc.strerror}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
