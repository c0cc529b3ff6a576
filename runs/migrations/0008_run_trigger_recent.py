# The run list filtered by a rare trigger (retry, upstream, api, cli, admin)
# walked the whole run table newest first: a second at 1,000,000 runs on
# SQLite (issue 11, P5).

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0007_run_page_indexes"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="run",
            index=models.Index(fields=["trigger", "-id"], name="run_trigger_recent"),
        ),
    ]
