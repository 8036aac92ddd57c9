"""What `iotdeck serve` runs beside the web app: broker, ingest, jobs, demo devices."""

import asyncio
import gc
import logging
import uuid

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from app.core import bus
from app.core.config import Settings
from app.core.shutdown import Shutdown
from app.dashboards.live import get_live_values
from app.mqtt import logins
from app.mqtt.connection import BrokerAddress
from app.mqtt.embedded import EmbeddedBroker
from app.mqtt.ingest import IngestWorker
from app.services import credentials
from app.sim.simulator import Simulator, backfill, demo_devices
from app.web import health
from app.workers import jobs, leases
from app.workers.command_dispatch import run_command_dispatcher
from app.workers.evaluation import GROUP, run_evaluator
from app.workers.ingest_process import build_worker
from app.workers.notifications import run_dispatcher

logger = logging.getLogger(__name__)

DEMO_RATE = 0.5  # messages/s per demo device: charts move within seconds of start
ABANDONED_GRACE = 1.0  # seconds a task cancelled at the stop's deadline gets to end


def broker_address(settings: Settings) -> BrokerAddress:
    """The external broker of IOTDECK_MQTT_URL, or the embedded one (MQTT 3.1.1)."""
    if settings.mqtt_url:
        return BrokerAddress.parse(settings.mqtt_url, settings.mqtt_protocol)
    return BrokerAddress("127.0.0.1", settings.mqtt_embedded_port, protocol="3.1.1")


def _login(settings: Settings, address: BrokerAddress, account: str) -> BrokerAddress:
    return logins.service_address(address, account, ca_file=settings.mqtt_ca_file)


def _tune_garbage_collector() -> None:
    """Keep full collections rare: they paused every push by up to 670 ms under load.

    With 1,000 GraphQL subscribers (`iotdeck bench realtime`), CPython's default
    thresholds ran a full collection every few seconds over every live object, stalling
    the event loop; p99 publish-to-client latency was 627 ms, 151 ms with this (89 ms
    with the collector off, which we do not do: cycles must still be freed). Objects
    alive after start-up are frozen out of collections altogether.

    The youngest generation is collected every 10,000 allocations: at 100,000 each such
    collection walked 100,000 young objects, a 150-200 ms pause every two seconds or so
    under steady GraphQL traffic, which kept 2% of device-list requests over 100 ms with
    100,000 devices; at 10,000 no such pause shows, and the real-time benchmark's p99 was
    287 ms against 735 ms, back to back (docs/performance.md, "Fleet").
    """
    gc.freeze()
    gc.set_threshold(10_000, 50, 1000)


class Background:
    """Starts and stops, in order, everything that runs beside the pages."""

    def __init__(
        self, settings: Settings, *, ingest: bool, shutdown: Shutdown, workers: bool = True
    ) -> None:
        self.settings = settings
        self._shutdown = shutdown
        self.address = broker_address(settings)
        self._with_ingest = ingest
        self._with_workers = workers
        self.broker: EmbeddedBroker | None = None
        self.worker: IngestWorker | None = None
        self._scheduler: AsyncIOScheduler | None = None
        self.simulator: Simulator | None = None
        self.hub: bus.Hub | None = None
        self._evaluation: asyncio.Task | None = None
        self._notifications: asyncio.Task | None = None
        self._commands: asyncio.Task | None = None
        self.bus: bus.Bus = bus.NullBus()
        self._starting: asyncio.Task | None = None

    async def start(self) -> None:
        """Bus, then broker (devices and ingest need it), then ingest, then the jobs."""
        self._starting = asyncio.current_task()  # NiceGUI runs it as a task of its own
        self.hub = bus.Hub(asyncio.get_running_loop())
        self.bus = bus.make_bus(self.settings.redis_url, self.settings.partitions)
        await self.bus.start(self.hub)
        bus.set_bus(self.bus, self.hub)
        health.register_check("bus", lambda: self.bus.healthy)
        if not self.settings.mqtt_url:
            self.broker = EmbeddedBroker(self.address.port, open_access=self.settings.demo)
            await self.broker.start()
        if self._with_ingest:
            ingest_login = await asyncio.to_thread(
                _login, self.settings, self.address, credentials.INGEST_ACCOUNT
            )
            self.worker = await asyncio.to_thread(build_worker, self.settings, ingest_login)
            self.worker.start()
            health.register_check("mqtt", lambda: self.worker is not None and self.worker.connected)
        if self._with_workers:
            await self._start_workers()
        _tune_garbage_collector()
        if self.settings.demo:
            devices = await asyncio.to_thread(demo_devices)
            history = await asyncio.to_thread(backfill, devices)
            device_logins = await asyncio.to_thread(
                logins.device_addresses,
                self.address,
                [spec.id for spec in devices],
                ca_file=self.settings.mqtt_ca_file,
            )
            self.simulator = Simulator(
                self.address, devices, rate=DEMO_RATE, signals=history, logins=device_logins
            )
            self.simulator.start()

    async def _start_workers(self) -> None:
        """The rule evaluator, the notification and command dispatchers, the periodic jobs."""
        assert self.hub is not None and self.bus.streams is not None  # made by `start`
        owner = leases.make_owner(self.settings.redis_url, self.settings.partitions, GROUP)
        self._evaluation = asyncio.create_task(
            run_evaluator(self.hub, self.bus.streams, owner), name="rule-evaluator"
        )
        self._notifications = asyncio.create_task(
            run_dispatcher(self.settings, self.hub), name="notification-dispatcher"
        )
        commands_login = await asyncio.to_thread(
            _login, self.settings, self.address, credentials.COMMANDS_ACCOUNT
        )
        self._commands = asyncio.create_task(
            run_command_dispatcher(
                commands_login,
                self.hub,
                client_id=f"iotdeck-commands-{uuid.uuid4().hex[:8]}",
                owner=owner,
                partitions=self.settings.partitions,
            ),
            name="command-dispatcher",
        )
        self._scheduler = AsyncIOScheduler(timezone="UTC")
        jobs.add_jobs(self._scheduler, self.settings)
        self._scheduler.start()

    async def stop(self) -> None:
        """Stop taking work, let what was taken finish, then the broker and the bus.

        Ingest commits and acknowledges what it holds; each dispatcher ends its round or
        sends in progress and claims nothing more; the evaluator ends its batch (its state
        is rebuilt from stored telemetry at the next start). They stop side by side within
        the time the shutdown has left (app/core/shutdown.py); what still runs then is abandoned
        and said. The broker goes once ingest acknowledged, the bus last.
        """
        self._shutdown.begin()
        starting = self._starting
        if starting is not None and starting is not asyncio.current_task() and not starting.done():
            # a stop during the start (a test that ends at once, an early SIGTERM): the
            # start ends first, or the embedded broker, still starting, refuses to stop
            await asyncio.wait({starting}, timeout=self._shutdown.remaining())
        if self.simulator is not None:
            # off the loop: the embedded broker runs on it and must acknowledge `offline`
            await asyncio.to_thread(self.simulator.stop)
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)  # no new job starts; one running ends
            await asyncio.sleep(0)
        await self._finish_work()
        if self.broker is not None:
            await self.broker.stop()
        health.unregister_check("bus")
        get_live_values().close()  # the dashboards' subscriptions go before the hub
        await self.bus.stop()
        bus.set_bus(bus.NullBus())

    async def _finish_work(self) -> None:
        """Ingest and the workers finish what they took, together, until the deadline."""
        work: dict[asyncio.Future, str] = {
            task: task.get_name()
            for task in (self._commands, self._notifications, self._evaluation)
            if task is not None
        }
        for task in work:
            task.cancel()  # each ends what it took first (app/core/shutdown.py: finish_first)
        ingest: asyncio.Future[int] | None = None
        if self.worker is not None:
            health.unregister_check("mqtt")
            stopping = asyncio.to_thread(self.worker.stop, self._shutdown.remaining())
            ingest = asyncio.ensure_future(stopping)
            work[ingest] = "ingest"
        if not work:
            return
        _, late = await asyncio.wait(work, timeout=self._shutdown.remaining())
        for task in late:
            task.cancel()  # abandoned: its thread, if any, ends on its own
            self._shutdown.left_undone(f"{work[task]}: still busy at the deadline")
        if late:  # a moment to end; one deaf to the cancel is left behind, not waited for
            await asyncio.wait(late, timeout=ABANDONED_GRACE)
        for task, name in work.items():
            if not task.done() or task.cancelled():
                continue
            if (error := task.exception()) is not None:
                logger.error("%s failed while stopping", name, exc_info=error)
            elif task is ingest and (left := task.result()):  # left unacknowledged
                self._shutdown.left_undone(
                    f"ingest: {left} message(s) not committed, left unacknowledged in the broker"
                )
