from django.core.management.base import BaseCommand, CommandError

from runs import services


class Command(BaseCommand):
    help = "Delete finished runs (and their logs) older than --days days."

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, required=True)

    def handle(self, days, **options):
        if days < 0:
            raise CommandError("--days must be 0 or more.")
        deleted = services.prune_runs(days)
        self.stdout.write(f"deleted {deleted} run(s) older than {days} day(s)")
