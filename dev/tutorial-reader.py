#!/usr/bin/env python3
"""Reads a search topic as the tutorial's consumers read it, independently of this project's code.

    dev/tutorial-reader.py --topic TOPIC --messages N [--brokers HOST:PORT] [--timeout-ms MS]
                           [--kafka-lib DIR]

Consumes the first N messages of TOPIC (from the beginning, in a throwaway consumer group that
commits nothing) with the Kafka distribution's console consumer (kafka.tools.ConsoleConsumer, run
on the JDK from the broker jars `dev/services` caches: $XDG_CACHE_HOME/bookstore-dev/
kafka-<version>/lib, the version read from dev/kafka/pom.xml, as dev/services finds them), reads
each message by the tutorial's rules, and prints one JSON object per message on stdout:

    {"partition": 0, "offset": 0, "headers": {"traceparent": "..."}, "key": "rust:u1",
     "query": "rust", "uid": "u1",              # the key split at its LAST ':' (docs/events.md)
     "trend_query": "rust", "rec_uid": "u1",    # as the tutorial's consumers split it: first ':'
     "books": [{"id": 1, "title": ..., "author": ..., "published_at": ..., "description": ...,
                "created_at": "YYYY-MM-DD HH:MM:SS"}]}

An empty user is null. A message that the tutorial's consumers could not read (no key, a key
or value that is not UTF-8, a value that is not a JSON array of books with exactly the
tutorial's fields and types) ends the script with status 1 and names the message and the rule.
Fewer than N messages within the timeout: status 2. Standard library only (Python 3.8+).
"""

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile

# What the tutorial's producer writes of a book, and the JSON types it gives them.
BOOK_FIELDS = {
    "id": (int,),
    "title": (str,),
    "author": (str,),
    "published_at": (str, type(None)),
    "description": (str,),
    "created_at": (str,),
}

# Separators the console consumer is told to print: control characters, which a JSON value
# never holds raw.
FIELD_SEP = "\x1f"
RECORD_SEP = "\x1e"
HEADERS_SEP = "\x1d"
HEADER_KEY_SEP = "\x1c"


class NotTutorial(Exception):
    """A message the tutorial's consumers could not read."""


# Warnings and errors of the tool on stderr, nothing else (as dev/services runs its tools).
LOG4J = """log4j.rootLogger=WARN, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.Target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n
"""


def kafka_lib():
    """Where dev/services keeps the Kafka jars."""
    pom = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kafka", "pom.xml")
    with open(pom, encoding="utf-8") as f:
        found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", f.read())
    if not found:
        raise SystemExit(f"tutorial-reader: no <kafka.version> in {pom}")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "bookstore-dev", f"kafka-{found.group(1)}", "lib")


def console_consumer(lib, brokers, topic, messages, timeout_ms):
    """The raw output of the console consumer: `messages` records, or fewer on a timeout."""
    if not os.path.isdir(lib):
        raise SystemExit(f"tutorial-reader: no Kafka jars in {lib}: run dev/services start kafka")
    log4j = tempfile.NamedTemporaryFile("w", suffix=".properties", delete=False)
    with log4j:
        log4j.write(LOG4J)
    command = [
        "java",
        "-Xshare:auto",
        "-cp",
        os.path.join(lib, "*"),
        "-Dlog4j.configuration=file:" + log4j.name,
        "kafka.tools.ConsoleConsumer",
        "--bootstrap-server", brokers,
        "--topic", topic,
        "--from-beginning",
        "--max-messages", str(messages),
        "--timeout-ms", str(timeout_ms),
        "--consumer-property", "enable.auto.commit=false",
        "--property", "print.partition=true",
        "--property", "print.offset=true",
        "--property", "print.headers=true",
        "--property", "print.key=true",
        "--property", "key.separator=" + FIELD_SEP,
        "--property", "line.separator=" + RECORD_SEP,
        "--property", "headers.separator=" + HEADERS_SEP,
        "--property", "headers.key.separator=" + HEADER_KEY_SEP,
    ]
    try:
        done = subprocess.run(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False
        )
    except FileNotFoundError:
        raise SystemExit("tutorial-reader: java is missing: run dev/services start") from None
    finally:
        os.unlink(log4j.name)
    return done.returncode, done.stdout, done.stderr.decode("utf-8", "replace")


def text(raw, what):
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise NotTutorial(f"the {what} is not UTF-8: {error}") from None


def parse_record(raw):
    """Partition, offset, headers, key and value of one printed record."""
    # Partition:P, Offset:O and the headers never hold the field separator; the key might, the
    # value (JSON) never does: the value is after the last one.
    parts = raw.split(FIELD_SEP.encode(), 3)
    if len(parts) != 4 or not parts[0].startswith(b"Partition:") or not parts[1].startswith(b"Offset:"):
        raise NotTutorial(f"unexpected console consumer output {raw[:200]!r}")
    partition = int(parts[0][len(b"Partition:"):])
    offset = int(parts[1][len(b"Offset:"):])
    headers = {}
    if parts[2] != b"NO_HEADERS":
        for header in text(parts[2], "header list").split(HEADERS_SEP):
            name, _, value = header.partition(HEADER_KEY_SEP)
            headers[name] = value
    key, sep, value = parts[3].rpartition(FIELD_SEP.encode())
    if not sep:
        raise NotTutorial(f"unexpected console consumer output {raw[:200]!r}")
    return partition, offset, headers, key, value


def read_books(value):
    """The value as the tutorial's consumers take it: a JSON array of book objects."""
    try:
        books = json.loads(text(value, "value"))
    except json.JSONDecodeError as error:
        raise NotTutorial(f"the value is not JSON: {error}") from None
    if not isinstance(books, list):
        raise NotTutorial(f"the value is a JSON {type(books).__name__}, not an array of books")
    for i, book in enumerate(books):
        if not isinstance(book, dict):
            raise NotTutorial(f"book {i} is not an object: {book!r}")
        if set(book) != set(BOOK_FIELDS):
            raise NotTutorial(
                f"book {i} has the fields {sorted(book)}, the tutorial's are {sorted(BOOK_FIELDS)}"
            )
        for field, types in BOOK_FIELDS.items():
            # JSON true/false are Python bools, which are ints too.
            if isinstance(book[field], bool) or not isinstance(book[field], types):
                raise NotTutorial(f"book {i}: {field} is {book[field]!r}")
        try:
            datetime.datetime.strptime(book["created_at"], "%Y-%m-%d %H:%M:%S")
        except ValueError:
            raise NotTutorial(
                f"book {i}: created_at {book['created_at']!r} is not YYYY-MM-DD HH:MM:SS"
            ) from None
    return books


def read_message(raw):
    partition, offset, headers, key, value = parse_record(raw)
    where = f"partition {partition}, offset {offset}"
    try:
        if key == b"null":
            raise NotTutorial("the message has no key (the tutorial's key holds the query)")
        key = text(key, "key")
        # The rule of docs/events.md: the user is after the last ':'.
        query, colon, uid = key.rpartition(":")
        if not colon:
            query, uid = key, ""
        # The tutorial's consumers: the query before the first ':', the user after it.
        trend_query, _, rec_uid = key.partition(":")
        if not query.strip():
            raise NotTutorial("the query is empty")
        books = read_books(value)
    except NotTutorial as error:
        raise NotTutorial(f"{where}: {error}") from None
    return {
        "partition": partition,
        "offset": offset,
        "headers": headers,
        "key": key,
        "query": query,
        "uid": uid or None,
        "trend_query": trend_query,
        "rec_uid": rec_uid or None,
        "books": books,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topic", required=True)
    parser.add_argument("--messages", type=int, required=True, help="how many to read")
    parser.add_argument(
        "--brokers",
        default=os.environ.get("BOOKSTORE_TEST_KAFKA_BROKERS", "127.0.0.1:9092"),
    )
    parser.add_argument("--timeout-ms", type=int, default=60000, help="for the next message")
    parser.add_argument("--kafka-lib", help="the Kafka jars [default: where dev/services keeps them]")
    args = parser.parse_args()
    if args.messages < 1:
        parser.error("--messages must be at least 1")

    lib = args.kafka_lib or kafka_lib()
    status, out, err = console_consumer(lib, args.brokers, args.topic, args.messages, args.timeout_ms)
    records = [r for r in out.split(RECORD_SEP.encode()) if r]
    if len(records) < args.messages:
        sys.stderr.write(
            f"tutorial-reader: {len(records)} of {args.messages} messages from {args.topic} at "
            f"{args.brokers} (console consumer status {status}):\n{err}\n"
        )
        return 2
    try:
        read = [read_message(r) for r in records[: args.messages]]
    except NotTutorial as error:
        sys.stderr.write(f"tutorial-reader: not the tutorial's format: {error}\n")
        return 1
    for message in read:
        print(json.dumps(message, ensure_ascii=False, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
