"""A real gRPC service for the tests: spdemo.Things, built with grpcio-tools at test time."""

from __future__ import annotations

import importlib
import sys
import time
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
from grpc_tools import protoc

from shadowproxy.testing import free_port
from tests.tls.helpers import CertFiles

PROTO = """\
syntax = "proto3";
package spdemo;

message GetThingRequest { int64 id = 1; }
message Inner { double score = 1; }
message Thing { int64 id = 1; string name = 2; repeated string tags = 3; Inner inner = 4; }

service Things {
  rpc GetThing(GetThingRequest) returns (Thing);
  rpc DeleteThing(GetThingRequest) returns (Thing);
  rpc ListThings(GetThingRequest) returns (stream Thing);
  rpc WatchThings(GetThingRequest) returns (stream Thing);
}
"""


WATCH_PAUSE = 2.0


@dataclass(frozen=True)
class Demo:
    descriptor: Path  # FileDescriptorSet
    pb2: ModuleType
    pb2_grpc: ModuleType


def build(directory: Path) -> Demo:
    (directory / "spdemo.proto").write_text(PROTO)
    descriptor = directory / "spdemo.pb"
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{directory}",
            f"--python_out={directory}",
            f"--grpc_python_out={directory}",
            "--include_imports",
            f"--descriptor_set_out={descriptor}",
            str(directory / "spdemo.proto"),
        ]
    )
    assert code == 0, "protoc failed"
    sys.path.insert(0, str(directory))
    try:
        pb2 = importlib.import_module("spdemo_pb2")
        pb2_grpc = importlib.import_module("spdemo_pb2_grpc")
    finally:
        sys.path.remove(str(directory))
    return Demo(descriptor, pb2, pb2_grpc)


def server(demo: Demo, version: int, cert: CertFiles | None) -> tuple[grpc.Server, int, list[str]]:
    """A gRPC server on 127.0.0.1, TLS unless `cert` is None (then h2c, plain text); version 2
    renames things and does not know id 404.
    Returns the server, its port and the list of method names it was called with."""
    pb2 = demo.pb2
    calls: list[str] = []

    class Things(demo.pb2_grpc.ThingsServicer):  # type: ignore[name-defined,misc]
        def GetThing(self, request: Any, context: grpc.ServicerContext) -> Any:
            calls.append("GetThing")
            if version == 2 and request.id == 404:
                context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
            name = "Ada" if version == 1 else "Ada L."
            return pb2.Thing(id=request.id, name=name, tags=["a", "b"], inner=pb2.Inner(score=1.5))

        def DeleteThing(self, request: Any, context: grpc.ServicerContext) -> Any:
            calls.append("DeleteThing")
            return pb2.Thing(id=request.id)

        def ListThings(self, request: Any, context: grpc.ServicerContext) -> Any:
            calls.append("ListThings")
            for i in range(3):
                yield pb2.Thing(id=i, name=f"t{i}")

        def WatchThings(self, request: Any, context: grpc.ServicerContext) -> Any:
            calls.append("WatchThings")
            yield pb2.Thing(id=1, name="first")
            time.sleep(WATCH_PAUSE)  # a long-lived stream: the first message must not wait for this
            yield pb2.Thing(id=2, name="second")

    s = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    demo.pb2_grpc.add_ThingsServicer_to_server(Things(), s)
    port = free_port()
    if cert is None:
        s.add_insecure_port(f"127.0.0.1:{port}")
    else:
        creds = grpc.ssl_server_credentials([(cert.key.read_bytes(), cert.cert.read_bytes())])
        s.add_secure_port(f"127.0.0.1:{port}", creds)
    s.start()
    return s, port, calls
