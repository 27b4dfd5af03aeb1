"""Behaviour of the safe filesystem cleanup engine behind the cleanup Celery tasks."""

from __future__ import annotations

import errno
import json
import os
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from personal_assistant.workers.cleanup import tree as file_cleanup
from personal_assistant.workers.cleanup.tree import (
    MAX_PATTERN_CHARS,
    MAX_PATTERNS,
    CleanupError,
    CleanupReport,
    cleanup_directory_tree,
)

NOW = 1_700_000_000.0  # a fixed clock: every file gets an explicit mtime relative to it
OLD = timedelta(days=30)
YOUNG = timedelta(minutes=5)
MAX_AGE = timedelta(days=7)


def make_file(path: Path, age: timedelta, size: int = 10) -> Path:
    """Create a file of `size` bytes whose mtime is `age` before NOW."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    age_path(path, age)
    return path


def age_path(path: Path, age: timedelta) -> None:
    """Set mtime (and atime) to `age` before NOW, without following a symlink."""
    stamp = NOW - age.total_seconds()
    os.utime(path, (stamp, stamp), follow_symlinks=False)


def snapshot(top: Path) -> dict[str, tuple[int, float]]:
    """Every path under `top` (itself included) with its lstat size and mtime."""
    paths = [top, *top.rglob("*")]
    return {str(p): (p.lstat().st_size, p.lstat().st_mtime) for p in paths}


def clean(root: Path, **kwargs: object) -> CleanupReport:
    """Run the engine on one root with the test clock and a 7-day max age unless overridden."""
    options: dict[str, object] = {"max_age": MAX_AGE, "now": NOW, **kwargs}
    return cleanup_directory_tree([root], **options)  # type: ignore[arg-type]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The cleanup root, with a sibling `outside` dir for escape checks."""
    path = tmp_path / "root"
    path.mkdir()
    (tmp_path / "outside").mkdir()
    return path


# --- argument checks ------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["../*", "*/..", "..", "sub/*.log", "/etc/*", "", "a\0b"])
def test_a_hostile_pattern_is_refused_before_anything_is_touched(root: Path, pattern: str) -> None:
    victim = make_file(root / "old.log", OLD)
    with pytest.raises(
        CleanupError, match=re.escape(f"pattern {pattern!r} in patterns is refused")
    ):
        clean(root, patterns=["*.log", pattern])
    assert victim.exists()


@pytest.mark.parametrize(
    ("patterns", "problem"),
    [
        ({"*.log": True}, "patterns must be a list of patterns, got dict"),
        (["*.log", 7], "patterns must hold strings, got int"),
        (
            ["*.log"] * (MAX_PATTERNS + 1),
            f"holds {MAX_PATTERNS + 1} patterns; at most {MAX_PATTERNS}",
        ),
        (["*" * (MAX_PATTERN_CHARS + 1)], f"at most {MAX_PATTERN_CHARS}"),
    ],
)
def test_patterns_of_the_wrong_shape_or_size_are_refused_naming_the_limit(
    root: Path, patterns: object, problem: str
) -> None:
    victim = make_file(root / "old.log", OLD)
    with pytest.raises(CleanupError, match=re.escape(problem)):
        clean(root, patterns=patterns)
    assert victim.exists()


def test_an_empty_pattern_list_is_refused(root: Path) -> None:
    with pytest.raises(CleanupError, match="patterns is empty"):
        clean(root, patterns=[])


def test_a_single_string_pattern_is_refused(root: Path) -> None:
    with pytest.raises(CleanupError, match="list of patterns"):
        clean(root, patterns="*.log")


def test_a_negative_max_age_is_refused(root: Path) -> None:
    victim = make_file(root / "old.log", OLD)
    with pytest.raises(CleanupError, match="max_age must not be negative"):
        clean(root, max_age=timedelta(seconds=-1))
    assert victim.exists()


# --- what gets deleted ----------------------------------------------------------------------


def test_old_matching_files_are_deleted_and_young_ones_kept(root: Path) -> None:
    old = make_file(root / "old.log", OLD, size=100)
    young = make_file(root / "young.log", YOUNG)
    report = clean(root)
    assert not old.exists()
    assert young.exists()
    assert (report.files_matched, report.files_deleted, report.bytes_freed) == (1, 1, 100)


def test_a_file_exactly_max_age_old_is_kept_and_one_a_second_older_is_deleted(root: Path) -> None:
    boundary = make_file(root / "boundary.log", MAX_AGE)
    older = make_file(root / "older.log", MAX_AGE + timedelta(seconds=1))
    clean(root)
    assert boundary.exists()
    assert not older.exists()


def test_without_an_explicit_clock_the_current_time_is_used(root: Path) -> None:
    fresh = root / "fresh.log"
    fresh.write_text("just written")
    ancient = make_file(root / "ancient.log", OLD)  # 30 days before NOW, i.e. years ago
    cleanup_directory_tree([root], max_age=timedelta(hours=1))
    assert fresh.exists()
    assert not ancient.exists()


def test_patterns_match_the_file_name_only(root: Path) -> None:
    log = make_file(root / "app.log", OLD)
    tmp = make_file(root / "x.tmp", OLD)
    kept = make_file(root / "notes.txt", OLD)
    in_log_named_dir = make_file(root / "archive.log" / "data.txt", OLD)
    report = clean(root, patterns=["*.log", "*.tmp"])
    assert not log.exists()
    assert not tmp.exists()
    assert kept.exists()
    assert in_log_named_dir.exists()  # the directory's name matched, the file's did not
    assert report.files_deleted == 2


def test_narrow_to_can_only_restrict_the_configured_patterns(root: Path) -> None:
    log = make_file(root / "app.log", OLD)
    notes = make_file(root / "notes.txt", OLD)
    report = clean(root, patterns=["*.log"], narrow_to=["*"])
    assert not log.exists()
    assert notes.exists()  # "*" asked for, but only "*.log" is configured
    assert report.files_deleted == 1


def test_narrow_to_restricts_deletion_to_files_matching_both_lists(root: Path) -> None:
    app = make_file(root / "app.log", OLD)
    worker = make_file(root / "worker.log", OLD)
    tmp = make_file(root / "x.tmp", OLD)
    clean(root, patterns=["*.log", "*.tmp"], narrow_to=["worker.*", "x.*"])
    assert app.exists()
    assert not worker.exists()
    assert not tmp.exists()


def test_a_hostile_narrowing_pattern_is_refused_naming_its_field(root: Path) -> None:
    victim = make_file(root / "old.log", OLD)
    with pytest.raises(CleanupError, match=re.escape("pattern '../*' in narrow_to is refused")):
        clean(root, narrow_to=["../*"])
    assert victim.exists()


def test_a_root_inside_a_system_tree_is_refused_before_anything_is_touched() -> None:
    with pytest.raises(CleanupError, match="'/etc/ssl' is refused: it lies inside the system"):
        cleanup_directory_tree(["/etc/ssl"], max_age=MAX_AGE, dry_run=True)


def test_files_in_nested_directories_are_cleaned(root: Path) -> None:
    deep = make_file(root / "a" / "b" / "c" / "deep.log", OLD)
    report = clean(root)
    assert not deep.exists()
    assert (root / "a" / "b" / "c").is_dir()  # directories stay unless asked
    assert report.files_deleted == 1


def test_special_files_are_never_deleted_nor_counted_as_files(root: Path) -> None:
    fifo = root / "old.fifo"
    os.mkfifo(fifo)
    age_path(fifo, OLD)
    calls: list[tuple[int, int]] = []
    report = clean(root, progress=lambda seen, deleted: calls.append((seen, deleted)))
    assert fifo.exists()
    assert report.files_matched == 0
    assert calls == [(0, 0)]


def test_a_file_swapped_for_a_fifo_after_listing_is_not_deleted(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = make_file(root / "old.log", OLD)

    def swap() -> None:
        name.unlink()
        os.mkfifo(name)
        age_path(name, OLD)

    _on_listing(monkeypatch, root, swap)
    report = clean(root)
    assert name.exists()
    assert report.files_matched == 0


def test_all_roots_are_cleaned_and_reported(tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    a, b = make_file(first / "a.log", OLD), make_file(second / "b.log", OLD)
    report = cleanup_directory_tree([first, second], max_age=MAX_AGE, now=NOW)
    assert not a.exists()
    assert not b.exists()
    assert report.roots == (str(first.resolve()), str(second.resolve()))


# --- symlinks and staying inside the root ---------------------------------------------------


def test_a_symlink_to_an_old_file_outside_the_root_is_left_alone(root: Path) -> None:
    target = make_file(root.parent / "outside" / "precious.log", OLD)
    link = root / "link.log"
    link.symlink_to(target)
    age_path(link, OLD)
    report = clean(root)
    assert target.exists()
    assert target.stat().st_mtime == NOW - OLD.total_seconds()
    assert link.is_symlink()
    assert (report.skipped_symlinks, report.files_matched, report.bytes_freed) == (1, 0, 0)


def test_a_symlink_to_a_directory_outside_the_root_is_not_followed(root: Path) -> None:
    outside = root.parent / "outside"
    victim = make_file(outside / "precious.log", OLD)
    (root / "escape").symlink_to(outside, target_is_directory=True)
    report = clean(root, remove_empty_dirs=True)
    assert victim.exists()
    assert (root / "escape").is_symlink()
    assert report.skipped_symlinks == 1
    assert report.files_matched == 0


def test_nothing_outside_the_root_is_touched(root: Path) -> None:
    sibling = root.parent / "outside"
    make_file(sibling / "old.log", OLD)
    make_file(sibling / "nested" / "old.log", OLD)
    age_path(sibling / "nested", OLD)
    make_file(root / "old.log", OLD)
    before = snapshot(sibling)
    report = clean(root, remove_empty_dirs=True)
    assert snapshot(sibling) == before
    assert report.files_deleted == 1


def _on_listing(
    monkeypatch: pytest.MonkeyPatch, target: Path, action: Callable[[], object]
) -> None:
    """Run `action` right after the engine lists `target` (simulates a race mid-walk)."""
    real = file_cleanup._list_dir
    target_ino = target.stat().st_ino

    def listing(fd: int) -> list[os.DirEntry[str]]:
        entries = real(fd)
        if os.fstat(fd).st_ino == target_ino:
            action()
        return entries

    monkeypatch.setattr(file_cleanup, "_list_dir", listing)


def test_a_directory_swapped_for_a_symlink_mid_walk_is_not_followed(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = root.parent / "outside"
    victim = make_file(outside / "precious.log", OLD)
    make_file(root / "sub" / "old.log", OLD)

    def swap() -> None:
        (root / "sub").rename(root.parent / "moved")
        (root / "sub").symlink_to(outside, target_is_directory=True)

    _on_listing(monkeypatch, root, swap)
    report = clean(root)
    assert victim.exists()
    assert (root.parent / "moved" / "old.log").exists()  # deleted nothing at all
    assert report.files_deleted == 0
    assert report.errors == (f"{root.resolve() / 'sub'}: is no longer a directory; not followed",)


def test_a_directory_moved_out_of_the_root_mid_walk_is_left_alone(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = root / "a" / "b"
    make_file(deep / "old.log", OLD)
    (deep / "empty").mkdir()
    age_path(deep / "empty", OLD)
    moved = root.parent / "outside" / "a"
    _on_listing(monkeypatch, deep, lambda: (root / "a").rename(moved))
    report = clean(root, remove_empty_dirs=True)
    assert (moved / "b" / "old.log").exists()
    assert (moved / "b" / "empty").is_dir()
    assert report.files_matched == 1
    assert report.dirs_removed == 0
    assert report.files_deleted == 0
    assert any("left the cleanup root" in e for e in report.errors)


# --- errors ---------------------------------------------------------------------------------


def test_a_root_replaced_mid_walk_is_left_alone(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_file(root / "old.log", OLD)
    moved = root.parent / "outside" / "root"

    def replace_root() -> None:
        root.rename(moved)
        root.mkdir()

    _on_listing(monkeypatch, root, replace_root)
    report = clean(root)
    assert (moved / "old.log").exists()
    assert report.files_deleted == 0
    assert any("left the cleanup root" in e for e in report.errors)


def test_a_file_that_vanishes_mid_walk_is_reported_and_the_walk_continues(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ghost = make_file(root / "ghost.log", OLD)
    other = make_file(root / "other.log", OLD)
    _on_listing(monkeypatch, root, ghost.unlink)
    report = clean(root)
    assert not other.exists()
    assert report.files_deleted == 1
    assert report.errors == (f"{root.resolve() / 'ghost.log'}: No such file or directory",)


def test_a_permission_error_is_reported_and_the_walk_continues(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = make_file(root / "locked.log", OLD)
    other = make_file(root / "other.log", OLD)
    real_unlink = os.unlink

    def unlink(path: str, *, dir_fd: int | None = None) -> None:
        if path == "locked.log":
            raise PermissionError(errno.EACCES, "Permission denied")
        real_unlink(path, dir_fd=dir_fd)

    monkeypatch.setattr(os, "unlink", unlink)
    report = clean(root)
    assert locked.exists()
    assert not other.exists()
    assert (report.files_matched, report.files_deleted, report.bytes_freed) == (2, 1, 10)
    assert report.errors == (f"{root.resolve() / 'locked.log'}: Permission denied",)


def test_the_error_list_is_capped_with_a_summary(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(5):
        make_file(root / f"{i}.log", OLD)

    def unlink(path: str, *, dir_fd: int | None = None) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "unlink", unlink)
    monkeypatch.setattr(file_cleanup, "MAX_ERRORS", 2)
    report = clean(root)
    assert len(report.errors) == 3
    assert report.errors[-1] == "... and 3 more errors not listed"


def test_a_tree_deeper_than_the_limit_is_not_descended(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shallow = make_file(root / "a" / "old.log", OLD)
    deep = make_file(root / "a" / "b" / "c" / "old.log", OLD)
    monkeypatch.setattr(file_cleanup, "MAX_DEPTH", 2)
    report = clean(root)
    assert not shallow.exists()
    assert deep.exists()
    assert any("not descended" in e for e in report.errors)


# --- dry run, empty directories, report -----------------------------------------------------


def test_a_dry_run_changes_nothing_and_reports_what_would_be_freed(root: Path) -> None:
    make_file(root / "old.log", OLD, size=100)
    make_file(root / "sub" / "old.log", OLD, size=23)
    make_file(root / "young.log", YOUNG, size=7)
    age_path(root / "sub", OLD)
    before = snapshot(root)
    report = clean(root, dry_run=True, remove_empty_dirs=True)
    assert snapshot(root) == before
    assert report.dry_run
    assert (report.files_matched, report.files_deleted, report.bytes_freed) == (2, 0, 123)
    assert report.dirs_removed == 0


def test_empty_directories_are_kept_unless_asked(root: Path) -> None:
    make_file(root / "sub" / "old.log", OLD)
    age_path(root / "sub", OLD)
    report = clean(root)
    assert (root / "sub").is_dir()
    assert report.dirs_removed == 0


def test_directories_emptied_by_the_cleanup_are_removed_when_asked(root: Path) -> None:
    make_file(root / "a" / "b" / "old.log", OLD)
    (root / "empty").mkdir()
    for directory in (root / "a" / "b", root / "a", root / "empty"):
        age_path(directory, OLD)
    report = clean(root, remove_empty_dirs=True)
    assert list(root.iterdir()) == []
    assert root.is_dir()  # the root itself is never removed
    assert report.dirs_removed == 3


def test_a_directory_still_holding_young_files_is_kept(root: Path) -> None:
    make_file(root / "sub" / "old.log", OLD)
    young = make_file(root / "sub" / "young.log", YOUNG)
    age_path(root / "sub", OLD)
    report = clean(root, remove_empty_dirs=True)
    assert young.exists()
    assert report.dirs_removed == 0
    assert report.errors == ()  # "directory not empty" is expected, not an error


def test_a_recently_modified_empty_directory_is_kept_as_it_may_be_in_use(root: Path) -> None:
    (root / "fresh").mkdir()
    age_path(root / "fresh", YOUNG)
    report = clean(root, remove_empty_dirs=True)
    assert (root / "fresh").is_dir()
    assert report.dirs_removed == 0


def test_the_root_itself_is_never_removed_even_when_empty(root: Path) -> None:
    age_path(root, OLD)
    report = clean(root, remove_empty_dirs=True)
    assert root.is_dir()
    assert report.dirs_removed == 0


def test_report_counts_are_exact(root: Path) -> None:
    make_file(root / "a.log", OLD, size=1)
    make_file(root / "sub" / "b.log", OLD, size=20)
    make_file(root / "sub" / "c.txt", OLD, size=300)
    make_file(root / "young.log", YOUNG, size=4000)
    (root / "link.log").symlink_to(root / "young.log")
    (root / "dirlink").symlink_to(root / "sub", target_is_directory=True)
    (root / "gone").mkdir()
    age_path(root / "gone", OLD)
    report = clean(root, patterns=["*.log"], remove_empty_dirs=True)
    assert report == CleanupReport(
        roots=(str(root.resolve()),),
        dry_run=False,
        files_matched=2,
        files_deleted=2,
        bytes_freed=21,
        dirs_removed=1,
        skipped_symlinks=2,
        errors=(),
    )


def test_the_report_dict_survives_a_json_round_trip(root: Path) -> None:
    make_file(root / "old.log", OLD)
    as_dict = clean(root).as_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["roots"] == [str(root.resolve())]
    assert as_dict["files_deleted"] == 1


# --- progress -------------------------------------------------------------------------------


def test_progress_is_reported_every_500_files_and_once_at_the_end(root: Path) -> None:
    for i in range(1200):
        make_file(root / f"{i}.log", OLD, size=1)
    calls: list[tuple[int, int]] = []
    clean(root, progress=lambda seen, deleted: calls.append((seen, deleted)))
    assert calls == [(500, 500), (1000, 1000), (1200, 1200)]


def test_progress_on_a_small_tree_is_reported_once_at_the_end(root: Path) -> None:
    make_file(root / "old.log", OLD)
    make_file(root / "young.log", YOUNG)
    calls: list[tuple[int, int]] = []
    clean(root, progress=lambda seen, deleted: calls.append((seen, deleted)))
    assert calls == [(2, 1)]
