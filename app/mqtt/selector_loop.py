"""Many paho clients on ONE thread, through paho's external-loop API.

`loop_start()` costs a thread per client and stops scaling at a few hundred; one selector
over every client's socket (`loop_read`, `loop_write`, `loop_misc`) serves thousands.
The simulator's devices use it (app/sim/simulator.py). Its owner's work (publishing,
reconnecting) runs on the same thread, in `turn`, between two selects: paho's callbacks
and that work never race.
"""

import contextlib
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable

from paho.mqtt.client import Client

logger = logging.getLogger(__name__)

MISC_EVERY = 1.0  # seconds between keepalive checks (paho's loop_misc) of every client
_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


class SelectorLoop:
    """One thread: `turn`, then the sockets that are ready, until stopped; then `finish`."""

    def __init__(
        self, name: str, turn: Callable[[float], float], finish: Callable[[], None]
    ) -> None:
        """`turn(now)` does its owner's due work and returns the seconds until it has more;
        `finish()` runs on the thread once stopped (or after a crash), while it can still
        `drive` the sockets."""
        self._turn = turn
        self._finish = finish
        self._clients: list[Client] = []
        self._selector = selectors.DefaultSelector()
        self._waker = socket.socketpair()  # stop() writes to wake the thread from its select
        self._selector.register(self._waker[0], _READ, None)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def stopping(self) -> bool:
        """True once `stop` was called, or the loop failed: no new work from then on."""
        return self._stopping.is_set()

    def add(self, client: Client) -> None:
        """Drive `client` (before `start`): paho's socket hooks mirror its wishes in the
        selector."""
        client.on_socket_open = lambda c, _data, sock: self._watch(sock, c, _READ)
        client.on_socket_register_write = lambda c, _data, sock: self._watch(
            sock, c, _READ | _WRITE
        )
        client.on_socket_unregister_write = lambda c, _data, sock: self._watch(sock, c, _READ)
        client.on_socket_close = lambda c, _data, sock: self._watch(sock, c, 0)
        self._clients.append(client)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop turning, let `finish` run, and wait for the thread at most `timeout` s."""
        if not self._thread.is_alive():
            return  # not started, or already stopped (it closed its sockets)
        self._stopping.set()
        with contextlib.suppress(OSError):  # the thread may have ended (and closed it) just now
            self._waker[1].send(b"\0")
        self._thread.join(timeout)

    # on the loop thread -------------------------------------------------------------------

    def drive(self, done: Callable[[], bool], deadline: float) -> bool:
        """Serve the sockets until `done()` or the monotonic `deadline`; whether done."""
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._poll(min(remaining, 0.1))
        return True

    def idle(self) -> bool:
        """No client has a socket open any more."""
        return len(self._selector.get_map()) <= 1  # the waker's

    def close(self) -> None:
        """Close what is still open: abruptly, so the broker publishes the last wills."""
        for client in self._clients:
            sock = client.socket()
            if sock is not None:
                sock.close()
        self._selector.close()
        for end in self._waker:
            end.close()

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:
            logger.exception("%s: loop failed; finishing", self._thread.name)
        self._stopping.set()
        self._finish()

    def _loop(self) -> None:
        next_misc = time.monotonic() + MISC_EVERY
        while not self._stopping.is_set():
            now = time.monotonic()
            wait = self._turn(now)
            if now >= next_misc:
                for client in self._clients:
                    if client.socket() is not None:
                        client.loop_misc()  # keepalive pings, dead-link detection
                next_misc = now + MISC_EVERY
            wake_at = min(next_misc, now + wait)
            self._poll(max(0.0, wake_at - time.monotonic()))

    def _poll(self, timeout: float) -> None:
        for key, events in self._selector.select(timeout):
            client = key.data
            if client is None:
                self._waker[0].recv(64)
                continue
            if events & _READ:
                client.loop_read()
            if events & _WRITE:
                client.loop_write()

    def _watch(self, sock: socket.socket, client: Client, events: int) -> None:
        """Have the selector wait for `events` on `sock` (0: forget it)."""
        try:
            if not events:
                self._selector.unregister(sock)
            elif sock in self._selector.get_map():
                self._selector.modify(sock, events, client)
            else:
                self._selector.register(sock, events, client)
        except (KeyError, ValueError):
            pass  # paho tidies up sockets the selector has already dropped, or is closed
