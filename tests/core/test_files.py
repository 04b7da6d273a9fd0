"""replace_folder: the old folder stays whole until the new one is complete."""

from pathlib import Path

import pytest

from robot_rl.core.files import replace_folder


def _write(text: str):
    def write(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / "weights").write_text(text)
    return write


def test_replace_folder_swaps_in_the_new_folder_and_leaves_nothing_behind(tmp_path):
    final = tmp_path / "policy"
    replace_folder(final, _write("v1"))
    replace_folder(final, _write("v2"))
    assert (final / "weights").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"]


def test_a_failed_write_leaves_the_old_folder_intact(tmp_path):
    final = tmp_path / "policy"
    replace_folder(final, _write("v1"))

    def broken(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / "weights").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_folder(final, broken)
    assert (final / "weights").read_text() == "v1"
    replace_folder(final, _write("v3"))  # a stale .tmp from the failure does not get in the way
    assert (final / "weights").read_text() == "v3"
