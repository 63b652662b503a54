"""Analytics: continuous SQL over the gateway's data streams (DuckDB, in process), a live
dashboard, and motion events from video.

Modules, in the order data flows: ``spec`` (the ``[analytics]`` config) with ``windows`` (Flink
window functions → DuckDB SQL) → ``engine`` (one thread per application: read, ``decode``,
query, ``checkpoint``) → ``output`` (the outbox to data and delivery streams, exactly once) →
``api`` (JSON endpoints, server-sent events, the dashboard page in ``static/``; the subsystem
``gateway.app`` mounts: ``ROUTES``, ``lifecycle``). ``motion`` watches video streams and writes
motion events through the same checkpoint and outbox; ``cli`` is ``edge-gateway analytics``.
"""
