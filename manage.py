#!/usr/bin/env python
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "taskrun.settings")
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        if settings.configured:
            raise
        # The settings could not load (an unwritable DATA_DIR, say): say why
        # in one line, not with a traceback through Django's internals.
        sys.exit(f"taskrun: {exc}")
