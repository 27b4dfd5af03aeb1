"""Safe filesystem cleanup engine behind the ``cleanup_temp_files`` / ``cleanup_old_logs`` tasks.

The walk holds a file descriptor per directory and does every lookup relative to it
(``openat``/``fstatat``/``unlinkat`` via ``dir_fd``), opening directories with ``O_NOFOLLOW``.
A path-based walk (``os.walk`` + ``os.unlink(path)``) re-resolves every path component on each
call, so a directory swapped for a symlink mid-walk would redirect deletions anywhere on disk.
POSIX only: the workers run on Linux.

What is deleted can only be narrowed by a caller, never widened: a file goes when its name
matches one of the configured ``patterns`` *and*, when ``narrow_to`` is given, one of those
too. Which directories may be roots at all is decided in ``roots.py`` (system trees and
home directories are refused by prefix).
"""

from __future__ import annotations

import errno
import fnmatch
import itertools
import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path

from personal_assistant.workers.bounded_yaml import short_repr
from personal_assistant.workers.cleanup.roots import CleanupError, RootPolicy, validate_roots

__all__ = [
    "CleanupError",
    "CleanupReport",
    "RootPolicy",
    "cleanup_directory_tree",
    "validate_patterns",
    "validate_roots",
]

PROGRESS_EVERY = 500
"""Files seen between two progress callbacks."""
MAX_ERRORS = 1000
"""Per-file errors kept verbatim; the rest are summarised so a Celery result stays small."""
MAX_DEPTH = 256
"""Deepest directory level descended: each level holds one fd, and recursion must not blow up."""

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_PATTERNS = 64
"""Patterns per list: each file is matched against each one, and real configurations hold a
handful; a longer list is a mistake or an attempt to make the walk slow."""
MAX_PATTERN_CHARS = 255
"""A pattern longer than the longest file name (NAME_MAX) can only match by its wildcards."""


@dataclass(frozen=True)
class CleanupReport:
    """Outcome of one cleanup run; ``errors`` holds per-file problems that were not raised."""

    roots: tuple[str, ...]  # the validated, resolved roots
    dry_run: bool
    files_matched: int  # regular files old enough and matching a pattern
    files_deleted: int  # 0 in a dry run
    bytes_freed: int  # st_size (lstat) of deleted files, or of matched files in a dry run
    dirs_removed: int  # only with remove_empty_dirs; 0 in a dry run
    skipped_symlinks: int  # symlinks seen and left alone
    errors: tuple[str, ...]  # per-file problems (permission denied, vanished, ...)

    def as_dict(self) -> dict[str, object]:
        """Return a JSON-serialisable dict (tuples become lists) for a Celery result."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def validate_patterns(patterns: object, name: str = "patterns") -> tuple[str, ...]:
    """Return the patterns as a tuple, refusing anything but a short list of file-name globs.

    ``name`` is the field named in errors (a task argument or a setting). A pattern is matched
    against a file's *name* only, so one holding a ``/`` or ``..`` is refused rather than
    silently matching nothing.
    """
    if isinstance(patterns, str):
        shown = short_repr(patterns, 80)  # the string may be megabytes long
        raise CleanupError(f"{name} must be a list of patterns, got the string {shown}")
    if not isinstance(patterns, (list, tuple)):
        raise CleanupError(f"{name} must be a list of patterns, got {type(patterns).__name__}")
    if not patterns:
        raise CleanupError(f"{name} is empty: nothing would match")
    if len(patterns) > MAX_PATTERNS:
        raise CleanupError(f"{name} holds {len(patterns)} patterns; at most {MAX_PATTERNS}")
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise CleanupError(f"{name} must hold strings, got {type(pattern).__name__}")
        if len(pattern) > MAX_PATTERN_CHARS:
            raise CleanupError(
                f"a pattern in {name} is {len(pattern)} characters long; "
                f"at most {MAX_PATTERN_CHARS}"
            )
        if not pattern or "/" in pattern or ".." in pattern or "\0" in pattern:
            raise CleanupError(
                f"pattern {pattern!r} in {name} is refused: it must be a plain file-name glob"
            )
    return tuple(patterns)


def _list_dir(fd: int) -> list[os.DirEntry[str]]:
    """List a directory by fd (a seam so tests can simulate races between listing and acting)."""
    with os.scandir(fd) as it:
        return list(it)


@dataclass(frozen=True)
class _Dir:
    """An open directory on the walk: fd, (st_dev, st_ino) identity, and path for messages."""

    fd: int
    ident: tuple[int, int]
    path: Path


def _open_dir(path: Path, name: str | Path, dir_fd: int | None) -> _Dir:
    """Open a directory without following a symlink in its last component."""
    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    st = os.fstat(fd)
    return _Dir(fd, (st.st_dev, st.st_ino), path)


def _still_inside(chain: list[_Dir]) -> bool:
    """Check each open directory is still linked under its parent, up to the root's path.

    An fd keeps pointing at a directory even after it is renamed elsewhere, so without this a
    directory moved out of the root mid-walk would still be cleaned.
    """
    try:
        st = os.lstat(chain[0].path)
        if (st.st_dev, st.st_ino) != chain[0].ident:
            return False
        for parent, child in itertools.pairwise(chain):
            st = os.stat("..", dir_fd=child.fd, follow_symlinks=False)
            if (st.st_dev, st.st_ino) != parent.ident:
                return False
    except OSError:
        return False
    return True


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


@dataclass
class _Walker:
    """Mutable state of one cleanup run; builds the CleanupReport."""

    cutoff: float
    patterns: tuple[str, ...]
    narrow_to: tuple[str, ...] | None
    dry_run: bool
    remove_empty_dirs: bool
    progress: Callable[[int, int], None] | None
    files_seen: int = 0
    files_matched: int = 0
    files_deleted: int = 0
    bytes_freed: int = 0
    dirs_removed: int = 0
    skipped_symlinks: int = 0
    errors: list[str] = field(default_factory=list)
    errors_dropped: int = 0

    def error(self, where: Path, problem: OSError | str) -> None:
        """Record a per-file problem without raising."""
        if isinstance(problem, OSError):
            problem = problem.strerror or str(problem)
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(f"{where}: {problem}")
        else:
            self.errors_dropped += 1

    def clean_root(self, root: Path) -> None:
        """Clean one validated root; a root that vanished since validation is an error."""
        try:
            top = _open_dir(root, root, None)
        except OSError as exc:
            self.error(root, exc)
            return
        try:
            self._clean_dir([top])
        finally:
            os.close(top.fd)

    def _clean_dir(self, chain: list[_Dir]) -> None:
        here = chain[-1]
        try:
            entries = _list_dir(here.fd)
        except OSError as exc:
            self.error(here.path, exc)
            return
        subdirs: list[tuple[str, float]] = []
        for entry in entries:
            try:
                if entry.is_symlink():  # never followed, never deleted
                    self.skipped_symlinks += 1
                elif entry.is_dir(follow_symlinks=False):
                    # mtime taken before we delete anything inside it (which bumps it).
                    subdirs.append((entry.name, entry.stat(follow_symlinks=False).st_mtime))
                elif entry.is_file(follow_symlinks=False):
                    self._visit_file(chain, entry)
            except OSError as exc:  # vanished, permission denied, ...: report and go on
                self.error(here.path / entry.name, exc)
        for name, mtime in subdirs:
            self._descend(chain, name, mtime)

    def _visit_file(self, chain: list[_Dir], entry: os.DirEntry[str]) -> None:
        self.files_seen += 1
        try:
            self._consider_file(chain, entry)
        except OSError as exc:
            self.error(chain[-1].path / entry.name, exc)
        if self.progress is not None and self.files_seen % PROGRESS_EVERY == 0:
            self.progress(self.files_seen, self.files_deleted)

    def _consider_file(self, chain: list[_Dir], entry: os.DirEntry[str]) -> None:
        if not _matches(entry.name, self.patterns):
            return
        if self.narrow_to is not None and not _matches(entry.name, self.narrow_to):
            return
        st = entry.stat(follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode) or st.st_mtime >= self.cutoff:
            return
        self.files_matched += 1
        if not self.dry_run:
            if not _still_inside(chain):
                raise OSError(errno.EXDEV, "its directory left the cleanup root; left alone")
            # unlinkat never follows a symlink: a swap after the stat can at worst remove a link.
            os.unlink(entry.name, dir_fd=chain[-1].fd)
            self.files_deleted += 1
        self.bytes_freed += st.st_size

    def _descend(self, chain: list[_Dir], name: str, mtime: float) -> None:
        path = chain[-1].path / name
        if len(chain) > MAX_DEPTH:
            self.error(path, f"deeper than {MAX_DEPTH} levels; not descended")
            return
        try:
            child = _open_dir(path, name, chain[-1].fd)
        except OSError as exc:  # ELOOP/ENOTDIR: O_NOFOLLOW caught a swap (e.g. for a symlink)
            swapped = exc.errno in (errno.ELOOP, errno.ENOTDIR)
            self.error(path, "is no longer a directory; not followed" if swapped else exc)
            return
        try:
            self._clean_dir([*chain, child])
        finally:
            os.close(child.fd)
        # Only directories untouched for max_age go: a fresh empty dir (mkdtemp) may be in use.
        if not self.remove_empty_dirs or self.dry_run or mtime >= self.cutoff:
            return
        try:
            if not _still_inside(chain):
                raise OSError(errno.EXDEV, "left the cleanup root; left alone")
            os.rmdir(name, dir_fd=chain[-1].fd)
            self.dirs_removed += 1
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):  # not empty is expected
                self.error(path, exc)

    def report(self, roots: tuple[Path, ...]) -> CleanupReport:
        """Freeze the counters into a CleanupReport."""
        errors = list(self.errors)
        if self.errors_dropped:
            errors.append(f"... and {self.errors_dropped} more errors not listed")
        return CleanupReport(
            roots=tuple(str(r) for r in roots),
            dry_run=self.dry_run,
            files_matched=self.files_matched,
            files_deleted=self.files_deleted,
            bytes_freed=self.bytes_freed,
            dirs_removed=self.dirs_removed,
            skipped_symlinks=self.skipped_symlinks,
            errors=tuple(errors),
        )


def cleanup_directory_tree(
    roots: Sequence[str | os.PathLike[str]],
    *,
    max_age: timedelta,
    patterns: Sequence[str] = ("*",),
    narrow_to: Sequence[str] | None = None,
    dry_run: bool = False,
    remove_empty_dirs: bool = False,
    now: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    policy: RootPolicy | None = None,
) -> CleanupReport:
    """Delete regular files under the roots whose mtime is older than max_age and whose *name*
    matches one of the fnmatch patterns (and, with ``narrow_to``, one of those too).

    Symlinks are counted and never followed or deleted; other non-regular files are ignored.
    With ``remove_empty_dirs``, directories below a root that are empty afterwards and were not
    modified within ``max_age`` are removed. ``dry_run`` changes nothing on disk. Per-file
    failures land in ``CleanupReport.errors``; invalid requests raise CleanupError before
    anything is touched. ``progress(files_seen, files_deleted)`` is called every
    PROGRESS_EVERY files and once at the end. ``policy`` decides which roots are allowed
    (default: ``RootPolicy.for_settings(None)``).
    """
    checked = validate_patterns(patterns)
    narrowed = None if narrow_to is None else validate_patterns(narrow_to, "narrow_to")
    if max_age < timedelta(0):
        raise CleanupError(f"max_age must not be negative, got {max_age}")
    valid_roots = validate_roots(roots, policy=policy)
    cutoff = (time.time() if now is None else now) - max_age.total_seconds()
    walker = _Walker(cutoff, checked, narrowed, dry_run, remove_empty_dirs, progress)
    for root in valid_roots:
        walker.clean_root(root)
    if progress is not None:
        progress(walker.files_seen, walker.files_deleted)
    return walker.report(valid_roots)
