"""A paho client tuned for a consumer that receives thousands of QoS 1 messages a second.

Profiling the ingest worker showed paho's read path, not the database, as its limit:
for every packet paho calls select() once and recv() three or more times (command
byte, length bytes, body), and under MQTT 5 it builds a Properties object for every
PUBLISH. This subclass reads the socket 64 KiB at a time into a buffer, parses every
complete packet in it per wake-up, decodes MQTT 5 PUBLISH packets without their
properties (the ingest reads none; it announces no topic aliases, so the broker sends
none), and sends the PUBACKs of a whole batch as one write. It overrides private methods
of paho-mqtt 2.x (`_sock_recv`, `_sock_close`, `loop_read`, `_handle_publish`,
`_handle_on_message`) and queues through `_packet_queue`; the version range in
pyproject.toml pins the API it relies on, and the ingest tests run through it against
a real Mosquitto over MQTT 5 and 3.1.1.
"""

import struct
import time

from paho.mqtt.client import PUBACK, Client, MQTTErrorCode, MQTTMessage, MQTTProtocolVersion

_READ_SIZE = 65536
_PUBACK = struct.Struct("!BBH")
_UINT16 = struct.Struct("!H")


def _skip_varint(packet: bytes, position: int) -> int:
    """The position past a block prefixed by its length as a variable byte integer."""
    value, shift = 0, 0
    while True:
        byte = packet[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return position + value
        shift += 7


class BulkClient(Client):
    """paho's Client with buffered reads and batched acknowledgements."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._read_buffer = bytearray()

    def _sock_recv(self, bufsize: int) -> bytes:
        if not self._read_buffer:
            data = super()._sock_recv(_READ_SIZE)  # BlockingIOError when nothing is waiting
            if not data:
                return data  # the broker closed the connection
            self._read_buffer += data
        chunk = bytes(self._read_buffer[:bufsize])
        del self._read_buffer[:bufsize]
        return chunk

    def _sock_close(self) -> None:
        self._read_buffer.clear()  # bytes of a dead connection must not reach the next one
        super()._sock_close()

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Handle every complete packet received so far, not just one per select()."""
        del max_packets
        while True:
            if self._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN and not self._read_buffer:
                return MQTTErrorCode.MQTT_ERR_SUCCESS

    def ack_many(self, mids: list[int]) -> None:
        """Send the PUBACKs of these QoS 1 messages, in this order, as one write."""
        if mids:
            packet = b"".join(_PUBACK.pack(PUBACK, 2, mid) for mid in mids)
            self._packet_queue(PUBACK, packet, 0, 0)

    def _handle_publish(self) -> MQTTErrorCode:
        header = self._in_packet["command"]
        qos = (header & 0x06) >> 1
        if self._protocol != MQTTProtocolVersion.MQTTv5 or qos != 1 or not self._manual_ack:
            return super()._handle_publish()
        packet = self._in_packet["packet"]
        topic_end = 2 + _UINT16.unpack_from(packet, 0)[0]
        mid = _UINT16.unpack_from(packet, topic_end)[0]
        message = MQTTMessage(mid=mid, topic=bytes(packet[2:topic_end]))
        message.dup = bool(header & 0x08)
        message.qos = qos
        message.retain = bool(header & 0x01)
        message.payload = bytes(packet[_skip_varint(packet, topic_end + 2) :])
        message.timestamp = time.monotonic()
        self._handle_on_message(message)
        return MQTTErrorCode.MQTT_ERR_SUCCESS  # acknowledged by ack_many after the commit

    def _handle_on_message(self, message: MQTTMessage) -> None:
        # straight to on_message: the ingest registers no per-topic callbacks, and paho's
        # topic matcher cost more than the rest of the message handling
        self.on_message(self, self._userdata, message)
