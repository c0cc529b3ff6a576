"""A task's name maps to <TASKS_DIR>/<name>.py and never to anything outside."""

import pytest
from django.core.exceptions import ValidationError

from runs.names import script_path


@pytest.mark.parametrize("name", ["../etc", "a/b", "/abs", "x.py", "", "UPPER", "runs"])
def test_a_name_that_could_leave_tasks_dir_is_refused(tasks_dir, name):
    with pytest.raises(ValidationError):
        script_path(name)


def test_the_script_is_the_named_file_in_the_resolved_tasks_dir(tasks_dir):
    assert script_path("hello") == tasks_dir.resolve() / "hello.py"


def test_a_symlink_may_point_inside_tasks_dir_but_not_outside(tasks_dir, tmp_path):
    (tasks_dir / "real.py").write_text("print(1)")
    (tasks_dir / "alias.py").symlink_to(tasks_dir / "real.py")
    assert script_path("alias") == tasks_dir.resolve() / "real.py"

    secret = tmp_path / "secret.py"
    secret.write_text("print('not a task')")
    (tasks_dir / "escape.py").symlink_to(secret)
    with pytest.raises(ValidationError, match="inside TASKS_DIR"):
        script_path("escape")
    (tasks_dir / "dangling.py").symlink_to(tmp_path / "nowhere" / "x.py")
    with pytest.raises(ValidationError, match="inside TASKS_DIR"):
        script_path("dangling")


def test_a_tasks_dir_symlink_swapped_by_a_deployment_is_followed(tmp_path, settings):
    first, second = tmp_path / "release-1", tmp_path / "release-2"
    first.mkdir()
    second.mkdir()
    current = tmp_path / "current"
    current.symlink_to(first)
    settings.TASKS_DIR = current
    assert script_path("job") == first.resolve() / "job.py"

    swapped = tmp_path / "current.new"
    swapped.symlink_to(second)
    swapped.replace(current)  # the atomic swap deployments do
    assert script_path("job") == second.resolve() / "job.py"


def test_a_tasks_dir_whose_folder_was_moved_is_resolved_again(tmp_path, settings):
    """The folder behind TASKS_DIR moved (the same directory, so the same
    inode, now at another path): the old resolved path is not used."""
    data = tmp_path / "data"
    (data / "v1").mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(data / "v1")
    settings.TASKS_DIR = link / "."
    assert script_path("job").parent == (data / "v1").resolve()

    (data / "v1").rename(data / "v2")
    swapped = tmp_path / "link.new"
    swapped.symlink_to(data / "v2")
    swapped.replace(link)
    assert script_path("job").parent == (data / "v2").resolve()
