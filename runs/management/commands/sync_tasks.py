from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand

from runs.models import Task
from runs.names import validate_task_name


class Command(BaseCommand):
    help = "Import every *.py in TASKS_DIR as a task, and report scripts that went missing."

    def handle(self, *args, **options):
        tasks_dir = settings.TASKS_DIR
        found = set()
        for path in sorted(tasks_dir.glob("*.py")):
            name = path.stem
            try:
                validate_task_name(name)
            except ValidationError:
                self.stderr.write(f"skipped {path.name}: not a valid task name")
                continue
            found.add(name)
            task, created = Task.objects.get_or_create(name=name)
            if created:
                self.stdout.write(f"added {name}")
            elif task.missing:
                Task.objects.filter(pk=task.pk).update(missing=False)
                self.stdout.write(f"found again {name}")
        gone = Task.objects.exclude(name__in=found)
        for name in gone.filter(missing=False).values_list("name", flat=True):
            self.stderr.write(f"missing {name}: {name}.py is not in {tasks_dir}")
        gone.update(missing=True)
        self.stdout.write(f"{len(found)} task(s) in {tasks_dir}")
