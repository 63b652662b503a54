"""Plain-Python video library shared by the agent and the gateway (PyAV, no aiohttp).

- ``FragmentWriter``: frames/packets -> standalone MKV fragments (one keyframe-led cluster each)
- ``MkvStreamParser``: a PutMedia body (MKV documents back to back) -> ``ParsedFragment`` per cluster
- ``kvs.reader``: a stored fragment -> track + encoded frames; ``kvs.tags``: the KVS GetMedia tags
- ``kvs.remux`` (+ ``kvs.mp4`` boxes): fragments -> MP4 clip, fMP4 init + media segments
- ``kvs.playlist``: HLS master/media playlists, DASH MPD; ``kvs.images``: JPEG/PNG stills
"""

from kvs.errors import MkvError
from kvs.parser import MkvStreamParser, ParsedFragment, PartialFragment, parse_fragment
from kvs.writer import Fragment, FragmentWriter

__all__ = [
    "Fragment",
    "FragmentWriter",
    "MkvError",
    "MkvStreamParser",
    "ParsedFragment",
    "PartialFragment",
    "parse_fragment",
]
