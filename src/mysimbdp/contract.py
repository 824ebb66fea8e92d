"""The app contract (DESIGN.md §5): the ``MYSIMBDP_*`` variables a tenant app receives.

The platform (``services.run_batch``) sets them; the SDK (``mysimbdp.sdk``) reads them.
An app in any language can read them too. ``docs/tenant-guide.md`` documents each one.
"""

from __future__ import annotations

TENANT = "MYSIMBDP_TENANT"  # tenant id
RUN_ID = "MYSIMBDP_RUN_ID"  # this run's id
FILE_ID = "MYSIMBDP_FILE_ID"  # the staged file's id
INPUT = "MYSIMBDP_INPUT"  # absolute path of the staged file (read it, never move it)
INPUT_NAME = "MYSIMBDP_INPUT_NAME"  # the file's original name
INPUT_FORMAT = "MYSIMBDP_INPUT_FORMAT"  # csv | jsonl | json | parquet
INPUT_SHA256 = "MYSIMBDP_INPUT_SHA256"  # hex sha256 of the file: part of the default record key
INPUT_START = "MYSIMBDP_INPUT_START"  # optional: ingest only bytes [START, END) of the input (a chunk of a
INPUT_END = "MYSIMBDP_INPUT_END"  # big file; both on line boundaries; CSV: the header is the file's first line)
INPUT_FIRST_LINE = "MYSIMBDP_INPUT_FIRST_LINE"  # with START: the line number of the chunk's first record
DATASET = "MYSIMBDP_DATASET"  # dataset (table) to write into
KEY_FIELDS = "MYSIMBDP_KEY_FIELDS"  # comma-separated key fields of the stored document, or ""
# JSON: how the dataset is written: {"mode": "append"|"merge"|"replace", "order_by": FIELD|null,
# "indexes": [[FIELD, ...], ...]}; "" is append (domain.writespec). Replace: write the file's rows
# into its generation (the staging table of MYSIMBDP_FILE_ID); the platform swaps it in after the run.
WRITE = "MYSIMBDP_WRITE"
QUALITY = "MYSIMBDP_QUALITY"  # JSON: the profile's quality section (rules on input rows / stream records)
MAX_LINE_BYTES = "MYSIMBDP_MAX_LINE_BYTES"  # the profile's max line length
COREDMS_URL = "MYSIMBDP_COREDMS_URL"  # coredms URL scoped to this tenant only
RESULT = "MYSIMBDP_RESULT"  # path: write the result JSON here before exiting
REJECTS = "MYSIMBDP_REJECTS"  # path: append rejected rows here, one JSON object per line
PROGRESS = "MYSIMBDP_PROGRESS"  # path: rewrite {"rows": n, "bytes": n} here now and then
PARALLELISM = "MYSIMBDP_PARALLELISM"  # how many processes the app may use for one large file
PART_MIN_BYTES = "MYSIMBDP_PART_MIN_BYTES"  # optional: the smallest span worth a process of its own (16 MiB)
STORE_TIMEOUT_S = "MYSIMBDP_STORE_TIMEOUT_S"  # seconds to wait for a busy/unreachable store, then exit 75
LINE_MAP = "MYSIMBDP_LINE_MAP"  # replays only: JSON {"<input line>": <line in the original file>}; key and report by it
# Stream apps (clientstreamingestapp) get these too, instead of the input ones (and QUALITY only
# when their profile entry has check_quality on and the profile has rules; else it is ""):
BROKER_URL = "MYSIMBDP_BROKER_URL"  # the databroker to consume from
STREAM = "MYSIMBDP_STREAM"  # the tenant's stream this instance consumes
GROUP = "MYSIMBDP_GROUP"  # consumer group shared by the app's instances (the app's name)
INSTANCE = "MYSIMBDP_INSTANCE"  # this instance's id
BATCH_SIZE = "MYSIMBDP_BATCH_SIZE"  # broker messages pulled at once
MAX_DELIVERIES = "MYSIMBDP_MAX_DELIVERIES"  # a message failing this often is quarantined
ACK_WAIT_S = "MYSIMBDP_ACK_WAIT_S"  # a message not acked this long (its instance died) is delivered again
REPORT_PERIOD_S = "MYSIMBDP_REPORT_PERIOD_S"  # how often to report metrics to the monitor (through the broker)

ALL = (
    TENANT,
    RUN_ID,
    FILE_ID,
    INPUT,
    INPUT_NAME,
    INPUT_FORMAT,
    INPUT_SHA256,
    INPUT_START,
    INPUT_END,
    INPUT_FIRST_LINE,
    DATASET,
    KEY_FIELDS,
    WRITE,
    QUALITY,
    MAX_LINE_BYTES,
    COREDMS_URL,
    RESULT,
    REJECTS,
    PROGRESS,
    STORE_TIMEOUT_S,
    PARALLELISM,
    PART_MIN_BYTES,
    LINE_MAP,
    BROKER_URL,
    STREAM,
    GROUP,
    INSTANCE,
    BATCH_SIZE,
    MAX_DELIVERIES,
    ACK_WAIT_S,
    REPORT_PERIOD_S,
)

# Result JSON written by the app to $MYSIMBDP_RESULT:
#   {"rows_written": int, "rows_rejected": int, "rows_skipped": int, "bytes_read": int,
#    "dataset": str, "rows_stored": int (optional: rows now stored, new or already there)}
# Rejects, one JSON object per line in $MYSIMBDP_REJECTS:
#   {"line": int, "raw": str, "reason": str}
# Exit codes: 0 done; 65 (EX_DATAERR) the input is unusable, do not retry;
#   75 (EX_TEMPFAIL) the store is unavailable, retry later; anything else: failed.
