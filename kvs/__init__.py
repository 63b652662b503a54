"""Plain-Python video library shared by the agent and the gateway (PyAV, no aiohttp).

- ``FragmentWriter``: frames/packets -> standalone MKV fragments (one keyframe-led cluster each)
- ``MkvStreamParser``: a PutMedia body (MKV documents back to back) -> ``ParsedFragment`` per cluster
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
