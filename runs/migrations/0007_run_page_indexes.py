# A run's retry and the runs it started, found through indexes of only the
# rows that have one: with ANALYZE statistics, SQLite judged the foreign keys'
# own indexes (nearly all NULL) useless and walked the whole table for the
# run page (issue 11, P5).

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0006_perf_indexes"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="run",
            index=models.Index(
                condition=models.Q(("retry_of__isnull", False)),
                fields=["retry_of"],
                name="run_retry_of",
            ),
        ),
        migrations.AddIndex(
            model_name="run",
            index=models.Index(
                condition=models.Q(("upstream__isnull", False)),
                fields=["upstream", "id"],
                name="run_upstream",
            ),
        ),
    ]
