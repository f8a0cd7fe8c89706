"""Ready sinks for databases.

`SQLiteSink` needs only the standard library. `PostgresSink` needs the
`postgres` extra (`pip install 'pachka_actors[postgres]'`) and is imported from
`pachka_actors.sinks.postgres`, so this package never imports psycopg.
"""

from ..errors import PermanentSinkError, SchemaError
from .sqlite import ON_CONFLICT, SQLiteSink
from .table import TableSink

__all__ = ["ON_CONFLICT", "PermanentSinkError", "SQLiteSink", "SchemaError", "TableSink"]
