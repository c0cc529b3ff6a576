"""The three groups of CONTRACT: Viewers see, Operators also start and cancel
runs, Editors also create, edit and delete tasks, their code and secrets.

They are made (and their permissions put right) after every migrate, and so
also after the flush that ends each transactional test."""

from __future__ import annotations

VIEW = ["view_task", "view_run", "view_runevent", "view_coderevision"]
OPERATE = [*VIEW, "run_task"]
EDIT = [
    *OPERATE,
    "add_task",
    "change_task",
    "delete_task",
    "edit_code",
    "view_secret",
    "add_secret",
    "change_secret",
    "delete_secret",
]
GROUPS = {"Viewers": VIEW, "Operators": OPERATE, "Editors": EDIT}


def ensure_groups(**kwargs) -> None:
    from django.contrib.auth.models import Group, Permission

    for name, codenames in GROUPS.items():
        group, _ = Group.objects.get_or_create(name=name)
        perms = Permission.objects.filter(content_type__app_label="runs", codename__in=codenames)
        group.permissions.add(*perms)
