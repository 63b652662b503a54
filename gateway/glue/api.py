"""The AWS Glue wire API subset: ``POST /`` with ``X-Amz-Target: AWSGlue.<Action>`` (JSON 1.1).

Databases and tables only -- what a Firehose record format conversion needs for its schema
(``SchemaConfiguration`` DatabaseName/TableName). Inputs are checked against botocore's Glue
model; errors are Glue's (EntityNotFoundException, AlreadyExistsException, InvalidInputException).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway.errors import AwsError
from gateway.glue.catalog import Catalog
from gateway.kds.protocol import JSON, target_action
from gateway.kds.validate import validate

TARGET_PREFIX = "AWSGlue"
Handler = Callable[[Catalog, dict[str, Any]], Awaitable[dict[str, Any]]]


def _page(items: list[dict[str, Any]], p: dict[str, Any], key: str) -> dict[str, Any]:
    start = 0
    if p.get("NextToken"):
        try:
            start = int(p["NextToken"])
        except ValueError as exc:
            raise AwsError("InvalidInputException", "Invalid NextToken.") from exc
    limit = p.get("MaxResults", 100)
    out: dict[str, Any] = {key: items[start : start + limit]}
    if start + limit < len(items):
        out["NextToken"] = str(start + limit)
    return out


async def create_database(catalog: Catalog, p: dict[str, Any]) -> dict[str, Any]:
    await asyncio.to_thread(catalog.create_database, p["DatabaseInput"])
    return {}


async def get_database(catalog: Catalog, p: dict[str, Any]) -> dict[str, Any]:
    return {"Database": catalog.database(p["Name"])}


async def get_databases(catalog: Catalog, p: dict[str, Any]) -> dict[str, Any]:
    return _page([catalog.databases[n] for n in sorted(catalog.databases)], p, "DatabaseList")


async def delete_database(catalog: Catalog, p: dict[str, Any]) -> dict[str, Any]:
    await asyncio.to_thread(catalog.delete_database, p["Name"])
    return {}


def _table_input(p: dict[str, Any]) -> dict[str, Any]:
    """The model leaves TableInput optional (open-table-format inputs may stand instead); this
    catalog keeps Glue tables only, so it needs one."""
    if "TableInput" not in p:
        raise AwsError("InvalidInputException", "TableInput is required.")
    return p["TableInput"]  # type: ignore[no-any-return]


async def create_table(catalog: Catalog, p: dict[str, Any]) -> dict[str, Any]:
    await asyncio.to_thread(catalog.put_table, p["DatabaseName"], _table_input(p), create=True)
    return {}


async def update_table(catalog: Catalog, p: dict[str, Any]) -> dict[str, Any]:
    await asyncio.to_thread(catalog.put_table, p["DatabaseName"], _table_input(p), create=False)
    return {}


async def get_table(catalog: Catalog, p: dict[str, Any]) -> dict[str, Any]:
    return {"Table": catalog.table(p["DatabaseName"], p["Name"])}


async def get_tables(catalog: Catalog, p: dict[str, Any]) -> dict[str, Any]:
    tables = catalog.tables_of(p["DatabaseName"])
    if p.get("Expression"):
        import re

        try:
            pattern = re.compile(p["Expression"].replace("*", ".*"))
        except re.error as exc:
            raise AwsError("InvalidInputException", f"Invalid Expression: {exc}") from exc
        tables = [t for t in tables if pattern.fullmatch(t["Name"])]
    return _page(tables, p, "TableList")


async def delete_table(catalog: Catalog, p: dict[str, Any]) -> dict[str, Any]:
    await asyncio.to_thread(catalog.delete_table, p["DatabaseName"], p["Name"])
    return {}


HANDLERS: dict[str, Handler] = {
    "CreateDatabase": create_database,
    "CreateTable": create_table,
    "DeleteDatabase": delete_database,
    "DeleteTable": delete_table,
    "GetDatabase": get_database,
    "GetDatabases": get_databases,
    "GetTable": get_table,
    "GetTables": get_tables,
    "UpdateTable": update_table,
}


def make_handler(get_catalog: Callable[[web.Request], Catalog]) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        action, handler = target_action(request.headers, HANDLERS, "Glue endpoint (databases and tables only)")
        params = validate(action, JSON.decode(await request.read()), JSON, "glue")
        result = await handler(get_catalog(request), params)
        return web.Response(body=JSON.encode(result), content_type=JSON.content_type)

    return handle
