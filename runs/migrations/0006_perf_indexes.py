# The live runs of a task, found without walking its history (issue 11, P5).

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0005_notifications"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="run",
            index=models.Index(fields=["task", "status"], name="run_task_status"),
        ),
    ]
