#!/usr/bin/env python3
"""Call a pg-request-reply service from Python, with nothing but a PostgreSQL driver.

    python3 caller.py [--dsn URL] [--schema NAME] [--timeout SECONDS] [--json] CHANNEL PAYLOAD

Sends PAYLOAD to one responder of CHANNEL with request(), then waits for the reply with
await_reply() and prints it. The two calls must run in separate transactions (the request becomes
visible to responders only when its transaction commits), hence autocommit. Errors of the protocol
arrive as SQLSTATEs of class PR; this script turns the common ones into messages and exit codes:

    0 the reply was printed on stdout     3 PR001 no responders on the channel
    4 PR002 timed out                     5 PR003 the handler failed (its code is the DETAIL)
    6 PR004 the responder died            1 anything else (PR005-PR009, connection errors...)

The DSN comes from --dsn or DATABASE_URL. Works with psycopg2 or psycopg (3), whichever is installed.
"""
import argparse
import json
import os
import sys

try:
    import psycopg2 as psycopg
    from psycopg2 import sql
except ImportError:  # psycopg 3 has the same connect/cursor/sql/diag API for what is used here
    try:
        import psycopg
        from psycopg import sql
    except ImportError:
        sys.exit("caller.py needs psycopg2 or psycopg: pip install psycopg2-binary (or apt-get install python3-psycopg2)")

EXIT_CODES = {"PR001": 3, "PR002": 4, "PR003": 5, "PR004": 6}


def call(dsn, schema, channel, payload, timeout_s, as_json):
    """Sends one request and returns its reply (text, or a decoded JSON value with as_json)."""
    conn = psycopg.connect(dsn)
    conn.autocommit = True  # request() must commit before await_reply() can see a reply
    try:
        with conn.cursor() as cur:
            kind, await_reply = ("jsonb", "await_reply_json") if as_json else ("text", "await_reply")
            cur.execute(
                sql.SQL("select {}.request(%s, %s::{}, %s * interval '1 second')").format(sql.Identifier(schema), sql.SQL(kind)),
                (channel, payload, timeout_s),
            )
            (request_id,) = cur.fetchone()
            # A later transaction: blocks until the reply commits (or the request's deadline passes).
            cur.execute(sql.SQL("select {}.{}(%s)").format(sql.Identifier(schema), sql.Identifier(await_reply)), (request_id,))
            return cur.fetchone()[0]
    finally:
        conn.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("channel")
    parser.add_argument("payload", help="text, or a JSON document with --json")
    parser.add_argument("--dsn", default=os.environ.get("DATABASE_URL"), help="default: $DATABASE_URL")
    parser.add_argument("--schema", default="public", help="where the protocol was migrated (default: public)")
    parser.add_argument("--timeout", type=float, default=30, help="the request's deadline in seconds (default: 30)")
    parser.add_argument("--json", action="store_true", help="send the payload as JSON and print the reply as JSON")
    args = parser.parse_args()
    if not args.dsn:
        parser.error("no database: pass --dsn or set DATABASE_URL")

    try:
        reply = call(args.dsn, args.schema, args.channel, args.payload, args.timeout, args.json)
    except psycopg.Error as e:
        code = e.diag.sqlstate  # psycopg2 also has it as e.pgcode, psycopg 3 as e.sqlstate
        if code == "PR001":
            print(f"no responders on channel {args.channel!r}", file=sys.stderr)
        elif code == "PR002":
            print(f"timed out waiting for {args.channel!r}", file=sys.stderr)
        elif code == "PR003":
            # The handler threw: its message is the error's message, its code the DETAIL.
            print(f"remote error {e.diag.message_detail}: {e.diag.message_primary}", file=sys.stderr)
        elif code == "PR004":
            print("the responder died while handling the request", file=sys.stderr)
        else:
            print(f"database error {code or '(no SQLSTATE)'}: {str(e).strip()}", file=sys.stderr)
        return EXIT_CODES.get(code, 1)

    print(json.dumps(reply, ensure_ascii=False) if args.json else reply)
    return 0


if __name__ == "__main__":
    sys.exit(main())
