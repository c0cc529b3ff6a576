"""Kept for the migration graph: the groups are now made after every migrate
by runs.permissions.ensure_groups (a post_migrate receiver)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("runs", "0002_shared_models")]

    operations = []
