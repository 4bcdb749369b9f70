"""Fast JSON responses: orjson, and no second validation of what the routes built from typed SQL rows.

Routes keep their `response_model` for the OpenAPI docs, but return these directly, which FastAPI sends as they
are (validating big record lists again costs more CPU than the SQL behind them).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
from fastapi.responses import Response


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


class FastJSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=_default, option=orjson.OPT_NON_STR_KEYS)


class FhirJSON(FastJSON):
    media_type = "application/fhir+json"
