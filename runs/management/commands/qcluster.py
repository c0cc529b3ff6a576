"""django-q2's qcluster, with a graceful drain on SIGTERM/SIGINT: running runs
get DRAIN_SECONDS to finish before they are cancelled as "worker shutdown"."""

import logging
import os
import time

from django.conf import settings
from django_q.cluster import Cluster
from django_q.management.commands.qcluster import Command as QClusterCommand

from runs import drain

logger = logging.getLogger(__name__)


class DrainingCluster(Cluster):
    clock = None

    def start(self) -> int:
        pid = super().start()
        # After the sentinel is forked, so that no child inherits the clock's
        # database connection. The clock fires schedules and delayed runs.
        from runs.schedules import Clock

        self.clock = Clock()
        self.clock.start()
        return pid

    stopping = False

    def sig_handler(self, signum, frame):
        # A second signal (a second Ctrl-C, `kill` of the whole group) while
        # the drain runs would re-enter django-q2's stop() and hang it; the
        # first one is already doing all there is to do.
        if self.stopping:
            logger.info("already stopping; SIGKILL stops at once (running scripts die too)")
            return
        self.stopping = True
        if self.clock is not None:
            self.clock.stop()
        if not drain.is_draining():
            logger.info("stopping: running runs get %s s to finish", settings.DRAIN_SECONDS)
        drain.begin(settings.DRAIN_SECONDS)
        if self._sentinel_killed_too():
            return
        super().sig_handler(signum, frame)

    def _sentinel_killed_too(self, wait: float = 0.3) -> bool:
        """Whether the signal went to the whole group and so also killed the
        sentinel (which keeps SIGTERM's default). django-q2's stop() would
        then set stop_event, and a multiprocessing Event.set() waits forever
        for a waiter that died while waiting; with the sentinel gone there is
        nothing left to stop."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self._sentinel_gone():
                logger.warning("the sentinel died with the signal: exiting without a drain")
                return True
            time.sleep(0.02)
        return False

    def _sentinel_gone(self) -> bool:
        if self.sentinel is None:
            return True
        try:
            # The signal may have interrupted a join() that already reaped
            # the sentinel but not yet noted it: is_alive() would say yes.
            os.kill(self.sentinel.pid, 0)
        except ProcessLookupError:
            return True
        return not self.sentinel.is_alive()


class Command(QClusterCommand):
    def handle(self, *args, **options):
        import django_q.management.commands.qcluster as q_command

        # django-q2's command builds its Cluster from its module's namespace.
        q_command.Cluster = DrainingCluster
        super().handle(*args, **options)
