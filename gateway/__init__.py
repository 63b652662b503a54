"""A Kinesis Data Streams and Kinesis Video Streams compatible gateway (aiohttp)."""
