"""The three groups of CONTRACT: Viewers see, Operators also start and cancel
runs, Editors also create, edit and delete tasks, their code and secrets."""

from django.db import migrations

VIEW = [
    "runs.view_task", "runs.view_run", "runs.view_runevent", "runs.view_coderevision",
]
OPERATE = VIEW + ["runs.run_task"]
EDIT = OPERATE + [
    "runs.add_task", "runs.change_task", "runs.delete_task", "runs.edit_code",
    "runs.view_secret", "runs.add_secret", "runs.change_secret", "runs.delete_secret",
]
GROUPS = {"Viewers": VIEW, "Operators": OPERATE, "Editors": EDIT}


def create_groups(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    # Permissions are normally made after all migrations; make them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, perms in GROUPS.items():
        group, _ = Group.objects.get_or_create(name=name)
        for perm in perms:
            app_label, codename = perm.split(".")
            group.permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0002_shared_models"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_groups, migrations.RunPython.noop)]
