"""The benchmarks' floor: parse the same body as a hook call, answer a fixed small response.

Registered only when ISLET_CDS_BENCH_ENDPOINTS is true, so production never exposes it.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from service.api.common import json_body

bp = Blueprint("bench", __name__)


@bp.post("/bench/floor")
def floor() -> Response:
    json_body()
    return jsonify({"cards": []})
