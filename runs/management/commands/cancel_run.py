from django.core.management.base import BaseCommand, CommandError

from runs import services
from runs.models import Run


class Command(BaseCommand):
    help = "Cancel a queued or running run."

    def add_arguments(self, parser):
        parser.add_argument("run_id", type=int)

    def handle(self, run_id, **options):
        run = Run.objects.filter(pk=run_id).first()
        if run is None:
            raise CommandError(f"No run #{run_id}.")
        try:
            run = services.request_cancel(run, actor="cli")
        except services.RunNotActive as exc:
            raise CommandError(str(exc)) from None
        if run.status == Run.Status.CANCELLED:
            self.stdout.write(f"run #{run_id} cancelled")
        else:
            self.stdout.write(f"run #{run_id}: cancel requested, its worker stops it")
