"""The baseline of the request-path benchmark: one bare Starlette route on uvicorn.

It answers the same JSON as the benchmark's `echo` workflow, served the way `gateway serve`
serves (uvloop, httptools, one worker, no access log), so that the ratio between the two
measures what the gateway itself adds to a request.

    python tests/bench/bare_app.py --port 8001
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

PATH = "/api/1.1/wf/echo"


async def echo(request: Request) -> JSONResponse:
    params = await request.json()
    return JSONResponse({"status": "success", "response": {
        "greeting": "Hello " + params["name"], "count": params["count"]}})


app = Starlette(routes=[Route(PATH, echo, methods=["POST"])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, workers=1, loop="uvloop",
                http="httptools", log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
