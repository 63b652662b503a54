"""Typed application-state keys shared by the gateway's subsystems."""

from __future__ import annotations

from aiohttp import web

from gateway.config import GatewayConfig

CONFIG = web.AppKey("config", GatewayConfig)
