# Real PostgreSQL clients against `gamelake serve --pg`: each prints one JSON document of what
# it read, with values in a canonical text form (so Rust compares them with `gamelake sql`).
# Usage: python postgres_wire_clients.py CLIENT DSN
import asyncio
import datetime
import decimal
import json
import sys

client, dsn = sys.argv[1], sys.argv[2]

QUERY = "SELECT player_id, name, spent, joined, tags, active, score FROM game.players ORDER BY player_id"
PARAM_QUERY = "SELECT name FROM game.players WHERE player_id = $1 AND score > $2"


def canon(value):
    """One value as text: what every client must agree on."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            return "naive " + value.isoformat()
        return value.astimezone(datetime.timezone.utc).isoformat()
    if isinstance(value, (list, tuple)):
        return [canon(v) for v in value]
    if isinstance(value, float):
        return repr(value)
    return str(value)


def rows(records):
    return [[canon(v) for v in r] for r in records]


def psycopg_sync():
    import psycopg

    out = {}
    with psycopg.connect(dsn) as conn:
        out["rows"] = rows(conn.execute(QUERY).fetchall())
        # Extended protocol with parameters, text and binary results.
        out["param"] = rows(conn.execute(PARAM_QUERY.replace("$1", "%s").replace("$2", "%s"), (1, 0.5)).fetchall())
        with conn.cursor(binary=True) as cur:
            cur.execute(QUERY)
            out["binary"] = rows(cur.fetchall())
        # A server-side cursor: portals fetched a few rows at a time.
        with conn.transaction():
            with conn.cursor(name="big") as cur:
                cur.itersize = 7
                cur.execute("SELECT g FROM generate_series(1, 100) AS t(g)")
                out["cursor_sum"] = sum(r[0] for r in cur)
        out["version"] = conn.execute("SELECT version()").fetchone()[0]
        out["server_version"] = conn.info.server_version
    return out


async def psycopg_async():
    import psycopg

    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(QUERY)
        return {"rows": rows(await cur.fetchall())}


async def asyncpg_client():
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        records = await conn.fetch(QUERY)
        param = await conn.fetch(PARAM_QUERY, 1, 0.5)
        stmt = await conn.prepare("SELECT count(*) AS n FROM game.players WHERE player_id >= $1")
        counted = [await stmt.fetchval(1), await stmt.fetchval(3)]
        return {"rows": rows(records), "param": rows(param), "counted": counted}
    finally:
        await conn.close()


def sqlalchemy_client():
    import sqlalchemy

    engine = sqlalchemy.create_engine(dsn.replace("postgresql://", "postgresql+psycopg://", 1))
    inspector = sqlalchemy.inspect(engine)
    tables = inspector.get_table_names(schema="game")
    reflected = [[c["name"], str(c["type"]), c["nullable"], c["default"]]
                 for c in inspector.get_columns("players", schema="game")]
    with engine.connect() as conn:
        result = rows(conn.execute(sqlalchemy.text(QUERY)).fetchall())
        columns = list(conn.execute(sqlalchemy.text("SELECT * FROM game.players LIMIT 0")).keys())
    return {"schemas": inspector.get_schema_names(), "tables": tables, "columns": columns,
            "reflected": reflected, "rows": result}


def odbc_client():
    """psqlODBC (Debian's odbc-postgresql) through pyodbc: the driver Excel and Power BI use."""
    import urllib.parse

    import pyodbc

    url = urllib.parse.urlparse(dsn)
    conn = pyodbc.connect(
        "DRIVER={PostgreSQL Unicode};"
        f"SERVER={url.hostname};PORT={url.port};DATABASE={url.path.lstrip('/')};"
        f"UID={url.username};PWD={url.password};SSLmode=disable",
        timeout=10,
    )
    try:
        cur = conn.cursor()
        tables = sorted(t.table_name for t in cur.tables(schema="game", tableType="TABLE"))
        columns = [c.column_name for c in cur.columns(table="players", schema="game")]
        cur.execute(QUERY.replace("ORDER BY", "WHERE player_id >= ? ORDER BY"), 1)
        return {"tables": tables, "columns": columns, "rows": rows(cur.fetchall())}
    finally:
        conn.close()


CLIENTS = {
    "psycopg": psycopg_sync,
    "psycopg-async": lambda: asyncio.run(psycopg_async()),
    "asyncpg": lambda: asyncio.run(asyncpg_client()),
    "sqlalchemy": sqlalchemy_client,
    "odbc": odbc_client,
}

print(json.dumps(CLIENTS[client]()))
