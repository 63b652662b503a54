"""The edge agent: capture video, telemetry and logs, spool them durably, forward them to Kinesis."""
