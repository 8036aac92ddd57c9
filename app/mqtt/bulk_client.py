"""A paho client tuned for a consumer that receives thousands of QoS 1 messages a second.

Profiling the ingest worker showed paho's read path, not the database, as its limit:
for every packet paho calls select() once and recv() three or more times (command
byte, length bytes, body). This subclass reads the socket 64 KiB at a time into a
buffer, parses every complete packet in it per wake-up, and sends the PUBACKs of a
whole batch as one write. It overrides three private methods of paho-mqtt 2.x
(`_sock_recv`, `_sock_close`, `loop_read`) and queues through `_packet_queue`; the
version range in pyproject.toml pins the API it relies on, and the ingest tests run
through it against a real Mosquitto.
"""

import struct

from paho.mqtt.client import PUBACK, Client, MQTTErrorCode, MQTTMessage

_READ_SIZE = 65536
_PUBACK = struct.Struct("!BBH")


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

    def _handle_on_message(self, message: MQTTMessage) -> None:
        # straight to on_message: the ingest registers no per-topic callbacks, and paho's
        # topic matcher cost more than the rest of the message handling
        self.on_message(self, self._userdata, message)
