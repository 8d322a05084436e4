"""Standard gRPC retry advice: `google.rpc.RetryInfo` in the `grpc-status-details-bin` trailer.

The trailer is a serialized `google.rpc.Status` whose `details` are `google.protobuf.Any`. The SDK needs
only two google.rpc messages, so it declares them in a private descriptor pool (protobuf alone, no
googleapis-common-protos dependency, no clash with it when both are loaded); Any and Duration are
protobuf's own well-known types.
"""

from __future__ import annotations

import functools
from typing import Any

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, duration_pb2, message_factory
from google.protobuf.message import DecodeError

STATUS_DETAILS_KEY = "grpc-status-details-bin"
RETRY_INFO_TYPE = "google.rpc.RetryInfo"

_F = descriptor_pb2.FieldDescriptorProto


@functools.cache
def _classes() -> tuple[Any, Any]:
    """google.rpc.Status and google.rpc.RetryInfo, built once in a pool of our own."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(any_pb2.DESCRIPTOR.serialized_pb)
    pool.AddSerializedFile(duration_pb2.DESCRIPTOR.serialized_pb)
    proto = descriptor_pb2.FileDescriptorProto(
        name="mimo_client/google_rpc_subset.proto",
        package="google.rpc",
        syntax="proto3",
        dependency=["google/protobuf/any.proto", "google/protobuf/duration.proto"],
    )
    status = proto.message_type.add(name="Status")
    status.field.add(name="code", number=1, type=_F.TYPE_INT32, label=_F.LABEL_OPTIONAL)
    status.field.add(name="message", number=2, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    status.field.add(
        name="details", number=3, type=_F.TYPE_MESSAGE, label=_F.LABEL_REPEATED, type_name=".google.protobuf.Any"
    )
    retry = proto.message_type.add(name="RetryInfo")
    retry.field.add(
        name="retry_delay",
        number=1,
        type=_F.TYPE_MESSAGE,
        label=_F.LABEL_OPTIONAL,
        type_name=".google.protobuf.Duration",
    )
    pool.Add(proto)
    get = message_factory.GetMessageClass
    return get(pool.FindMessageTypeByName("google.rpc.Status")), get(pool.FindMessageTypeByName(RETRY_INFO_TYPE))


def retry_info_delay_s(details: bytes) -> float | None:
    """The RetryInfo delay in a serialized google.rpc.Status, or None (no RetryInfo, or not a Status)."""
    status_cls, retry_cls = _classes()
    try:
        status = status_cls.FromString(details)
        for detail in status.details:
            if detail.type_url.rsplit("/", 1)[-1] == RETRY_INFO_TYPE:
                delay = retry_cls.FromString(detail.value).retry_delay
                return max(0.0, delay.seconds + delay.nanos / 1e9)
    except DecodeError:
        return None
    return None
