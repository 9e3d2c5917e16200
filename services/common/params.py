"""Path and query parameter types shared by the HTTP APIs.

An integer from a caller is bounded by what PostgreSQL's ``bigint`` holds: past it, the lookup would fail (500)
instead of the request being refused (422).
"""

from typing import Annotated

from fastapi import Path

from contracts.base import BIGINT_MAX

#: A row number in a path (a notice's sequence, a 印鑑登録番号): a positive bigint.
PositiveBigIntPath = Annotated[int, Path(ge=1, le=BIGINT_MAX)]
