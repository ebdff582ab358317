"""gRPC over HTTP/2: message frames, the call status, and protobuf decoding.

A gRPC body is a sequence of length-prefixed messages (1 byte compressed flag, 4 bytes
big-endian length, the message). The call's outcome is not the HTTP status but the
`grpc-status` / `grpc-message` trailers (or headers, in a trailers-only answer).

With a descriptor set (`protoc --include_imports --descriptor_set_out=FILE`), messages are
decoded to dicts with their proto field names, so the JSON diff reports a changed field at
the same kind of JSON Pointer a JSON body would have (`/thing/name`). Pure code, no I/O but
reading the descriptor file once (cached).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from shadowproxy.engine.exchange import Headers, Request, Response, header
from shadowproxy.engine.options import CompareOptions

STATUS_FIELDS = ("grpc-status", "grpc-message")
_PREFIX = struct.Struct(">BI")


class GrpcError(ValueError):
    """A body that is not a sequence of gRPC messages, or a message the descriptor cannot decode."""


@dataclass(frozen=True, slots=True)
class GrpcCompareOptions(CompareOptions):
    """CompareOptions plus what decoding a route's gRPC messages needs."""

    protobuf_descriptor: str | None = None  # a FileDescriptorSet file
    grpc_method: str | None = None  # "pkg.Service/Method": which message types to decode


@dataclass(frozen=True, slots=True)
class MethodInfo:
    input_type: str
    output_type: str
    client_streaming: bool
    server_streaming: bool

    @property
    def streaming(self) -> bool:
        return self.client_streaming or self.server_streaming


def is_grpc_type(content_type: str | None) -> bool:
    """True for `application/grpc` and `application/grpc+proto` (not grpc-web, which is HTTP/1-able)."""
    ct = (content_type or "").strip().lower()
    return ct == "application/grpc" or ct.startswith(("application/grpc+", "application/grpc;"))


def is_grpc(headers: Headers) -> bool:
    return is_grpc_type(header(headers, "content-type"))


def is_grpc_request(req: Request) -> bool:
    return req.method == "POST" and is_grpc(req.headers)


def split_frames(body: bytes) -> list[tuple[bool, bytes]]:
    """The (compressed, message) frames of a gRPC body. Raises GrpcError when it is not one."""
    frames: list[tuple[bool, bytes]] = []
    pos = 0
    while pos < len(body):
        if len(body) - pos < _PREFIX.size:
            msg = f"truncated gRPC frame header at byte {pos}"
            raise GrpcError(msg)
        flag, size = _PREFIX.unpack_from(body, pos)
        if flag not in (0, 1):
            msg = f"bad gRPC compressed flag {flag} at byte {pos}"
            raise GrpcError(msg)
        start = pos + _PREFIX.size
        if start + size > len(body):
            msg = f"gRPC message at byte {pos} says {size} bytes, only {len(body) - start} follow"
            raise GrpcError(msg)
        frames.append((flag == 1, body[start : start + size]))
        pos = start + size
    return frames


def frame_count(body: bytes) -> int:
    """How many messages a gRPC body holds; -1 when it is not a gRPC body."""
    try:
        return len(split_frames(body))
    except GrpcError:
        return -1


def frame(message: bytes, compressed: bool = False) -> bytes:
    return _PREFIX.pack(1 if compressed else 0, len(message)) + message


def status_of(resp: Response) -> dict[str, str | None]:
    """grpc-status and grpc-message, from the trailers or (trailers-only answer) the headers.
    An empty grpc-message is no message."""
    out: dict[str, str | None] = {}
    for name in STATUS_FIELDS:
        value = header(resp.trailers, name, None)
        if value is None:
            value = header(resp.headers, name, None)
        out[name] = value or None
    return out


# -- descriptors ----------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _pool(path: str) -> Any:
    from google.protobuf import descriptor_pb2, descriptor_pool

    try:
        with open(path, "rb") as f:
            fds = descriptor_pb2.FileDescriptorSet.FromString(f.read())
    except OSError as e:
        msg = f"cannot read protobuf descriptor set {path}: {e.strerror or e}"
        raise GrpcError(msg) from None
    except Exception as e:  # google.protobuf.message.DecodeError and friends
        msg = f"{path} is not a protobuf FileDescriptorSet ({e}); make it with protoc --descriptor_set_out"
        raise GrpcError(msg) from None
    pool = descriptor_pool.DescriptorPool()
    for file_proto in fds.file:
        try:
            pool.Add(file_proto)
        except Exception as e:  # an import missing: the set was made without --include_imports
            msg = f"{path}: {file_proto.name}: {e} (make the set with protoc --include_imports)"
            raise GrpcError(msg) from None
    return pool


def check_descriptor(path: str) -> None:
    """Raise GrpcError with a readable message when `path` is not a usable descriptor set."""
    _pool(path)


def method_info(descriptor: str, method: str) -> MethodInfo | None:
    """The method's message types and streaming kind; None when the set does not define it."""
    method = method.strip("/")
    if len(method) > MAX_CACHED_METHOD:  # the path is the client's: 256 of 60 KB would be 15 MB
        return _method_info.__wrapped__(descriptor, method)
    return _method_info(descriptor, method)


MAX_CACHED_METHOD = 256


@lru_cache(maxsize=256)
def _method_info(descriptor: str, method: str) -> MethodInfo | None:
    service, _, name = method.rpartition("/")
    try:
        m = _pool(descriptor).FindServiceByName(service).FindMethodByName(name)
    except (KeyError, AttributeError):
        return None
    if m is None:
        return None
    return MethodInfo(m.input_type.full_name, m.output_type.full_name, m.client_streaming, m.server_streaming)


@lru_cache(maxsize=256)
def _message_class(descriptor: str, type_name: str) -> Any:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(_pool(descriptor).FindMessageTypeByName(type_name))


def decode_message(descriptor: str, type_name: str, data: bytes) -> dict[str, Any]:
    """One message as a dict keyed by proto field names, fields without presence included."""
    from google.protobuf import json_format

    try:
        msg = _message_class(descriptor, type_name).FromString(data)
    except Exception as e:
        msg_ = f"cannot decode the message as {type_name}: {e}"
        raise GrpcError(msg_) from None
    out: dict[str, Any] = json_format.MessageToDict(
        msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return out


def decode_body(descriptor: str, type_name: str, body: bytes) -> list[dict[str, Any]]:
    """Every message of a gRPC body, decoded. Raises GrpcError (compressed, malformed, undecodable)."""
    out = []
    for compressed, data in split_frames(body):
        if compressed:
            msg = "a compressed gRPC message (grpc-encoding): compared as bytes"
            raise GrpcError(msg)
        out.append(decode_message(descriptor, type_name, data))
    return out
