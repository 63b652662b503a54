"""Analytics: continuous SQL over the gateway's data streams (DuckDB, in process), a live
dashboard, and motion events from video.

Modules, in the order data flows: ``spec`` (the ``[analytics]`` config) with ``windows`` (Flink
window functions → DuckDB SQL) → ``engine`` (one thread per application: read, ``decode``,
query, ``checkpoint``) → ``api`` (JSON endpoints, server-sent events, the dashboard page).
``api`` is the subsystem ``gateway.app`` mounts (``ROUTES``, ``lifecycle``); ``motion`` watches video streams and writes motion events as data-stream records.
"""
