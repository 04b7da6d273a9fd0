"""How nodes talk: a publish/subscribe interface (``base``) with an in-process backend (``inproc``) and a
ROS 2 wire-compatible DDS backend (``dds``, needs the ``ros`` extra), the standard ROS 2 messages we use
(``messages``) and their conversions to observations and action chunks (``convert``)."""

from robot_rl.transport.base import (
    RELIABLE,
    SENSOR_DATA,
    Latest,
    Publisher,
    QoS,
    ServiceClient,
    ServiceServer,
    Subscription,
    Transport,
    TransportError,
)
from robot_rl.transport.inproc import InProcBus, InProcTransport

__all__ = ["RELIABLE", "SENSOR_DATA", "InProcBus", "InProcTransport", "Latest", "Publisher", "QoS",
           "ServiceClient", "ServiceServer", "Subscription", "Transport", "TransportError", "make_transport"]


def make_transport(backend: str = "dds", **kwargs) -> Transport:
    """``inproc`` or ``dds`` (kwargs: domain_id, interface, peers)."""
    if backend == "inproc":
        return InProcTransport(**kwargs)
    if backend == "dds":
        from robot_rl.transport.dds import DDSTransport

        return DDSTransport(**kwargs)
    raise TransportError(f"unknown transport backend {backend!r}; expected 'inproc' or 'dds'")
