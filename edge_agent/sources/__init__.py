"""The agent's input sources, by config section name.

The runtime reads ``[[sources.<kind>]]`` tables, turns each into a config with
``SOURCE_TYPES[kind].from_dict(table, "sources.<kind>[<i>]")`` and starts ``config.build(spool,
agent_id).run(stop)`` in a thread. A new source is one module here plus one line in ``SOURCE_TYPES``.

Reject reasons (``edge_agent_records_rejected_total{source, reason}``), detailed in each module:

- mqtt: ``too_large``, ``bad_topic``
- serial: ``not_text``, ``too_long``, ``empty``, ``partial``
- logs: ``empty`` (long lines are cut and marked, not rejected)
- camera: ``camera_lost`` (device or stream gone, reopened), ``frame_dropped``
- any source: ``too_large`` when a record is bigger than the whole spool
"""

from __future__ import annotations

from edge_agent.sources.base import Source, SourceConfig
from edge_agent.sources.camera import CameraConfig, CameraSource
from edge_agent.sources.logs import LogsConfig, LogsSource
from edge_agent.sources.mqtt import MqttConfig, MqttSource
from edge_agent.sources.serial import SerialConfig, SerialSource

__all__ = [
    "CameraConfig",
    "CameraSource",
    "LogsConfig",
    "LogsSource",
    "MqttConfig",
    "MqttSource",
    "SOURCE_TYPES",
    "SerialConfig",
    "SerialSource",
    "Source",
    "SourceConfig",
]

SOURCE_TYPES: dict[str, type[SourceConfig]] = {
    "mqtt": MqttConfig,
    "serial": SerialConfig,
    "logs": LogsConfig,
    "camera": CameraConfig,
}
