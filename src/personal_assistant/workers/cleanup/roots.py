"""Which directories a cleanup may sweep: the root checks behind ``cleanup_directory_tree``.

Roots come from configuration only (TEMP_DIRS, LOG_DIRS, else DATA_DIR/tmp and DATA_DIR/logs),
never from a task's arguments. Each root is resolved (symlinks followed) and both the path as
written and the resolved path must pass these rules, so a symlinked parent cannot smuggle a
system directory in:

- The filesystem root is refused, and so is anything that *is, lies inside or contains* a
  system tree, matched by whole path components (so ``/usr/lib`` and ``/etc/ssl`` are refused,
  ``/usrdata`` is not): ``/bin /boot /dev /etc /lib /lib32 /lib64 /libx32 /proc /run /sbin
  /snap /sys /usr /var``.
- Inside those trees, only the usual places for temporary files and application logs are
  allowed: ``/var/tmp`` and anything below it, and ``/var/log/<app>`` and below (``/var/log``
  itself holds the system's own logs and audit trail, so it is refused).
- The project's DATA_DIR may live in ``/var/lib/<app>``, ``/var/cache/<app>`` or
  ``/var/opt/<app>`` (the FHS places for an application's state); directories strictly below
  it (its ``tmp`` and ``logs``) are then allowed.
- Wherever it is, DATA_DIR itself, and any root containing it, is refused: it also holds the
  local Redis data and the beat schedule, which a sweep of old files would delete.
- Home directories hold credentials and configuration as dotfiles (``.ssh``, ``.gnupg``,
  ``.config``): ``/home``, ``/root``, every ``/home/<user>`` and the worker's own home
  (``$HOME``) are refused as roots, as is anything inside one of their hidden entries and any
  root containing such a home. Ordinary sub-directories of a home stay allowed, since that is
  where a developer's checkout and its DATA_DIR live (``/home/dev/project/var/tmp``).
- ``/tmp`` and everything else (``/srv``, ``/opt``, ``/data``, ``/app``, ...) is allowed.

This guards against a mistaken configuration, not against an operator: the walk itself never
follows a symlink, so it cannot leave an allowed root that way.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CleanupError", "RootPolicy", "validate_roots"]

SYSTEM_TREES: tuple[Path, ...] = tuple(
    Path(p)
    for p in (
        *("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc"),
        *("/run", "/sbin", "/snap", "/sys", "/usr", "/var"),
    )
)
"""Operating-system trees no cleanup root may be, lie inside or contain (prefix match)."""
TEMP_PLACES: tuple[Path, ...] = (Path("/var/tmp"),)  # noqa: S108 - a place we refuse less, not use
"""Places inside a system tree allowed as roots, themselves included."""
LOG_PLACES: tuple[Path, ...] = (Path("/var/log"),)
"""Places inside a system tree whose sub-directories (one per application) are allowed."""
APP_STATE_PLACES: tuple[Path, ...] = (Path("/var/lib"), Path("/var/cache"), Path("/var/opt"))
"""Where an application's DATA_DIR may sit inside a system tree (``/var/lib/<app>``)."""
HOME_PARENTS: tuple[Path, ...] = (Path("/home"),)
"""Directories whose every child is a user's home directory."""
FIXED_HOMES: tuple[Path, ...] = (Path("/root"),)
"""Home directories outside HOME_PARENTS (the superuser's)."""


class CleanupError(ValueError):
    """Raised for an unsafe or invalid cleanup request; the message names the root/field."""


def _inside(path: Path, tree: Path) -> bool:
    """True when ``path`` is ``tree`` or below it, by whole components."""
    return path == tree or tree in path.parents


def _own_home() -> Path | None:
    """The worker's home directory, resolved, or None when it cannot be told."""
    try:
        return Path.home().resolve()
    except (OSError, RuntimeError, KeyError):  # no $HOME and no passwd entry
        return None


@dataclass(frozen=True)
class RootPolicy:
    """The rules above, as data: which absolute, resolved paths may be cleanup roots.

    ``data_dir`` is the project's DATA_DIR (resolved, absolute) or None; ``homes`` are the home
    directories known besides every ``/home/<user>`` (by default ``/root`` and ``$HOME``).
    """

    data_dir: Path | None = None
    homes: tuple[Path, ...] = FIXED_HOMES
    system_trees: tuple[Path, ...] = SYSTEM_TREES

    @classmethod
    def for_settings(cls, data_dir: Path | None) -> RootPolicy:
        """The policy of a worker: its DATA_DIR (ignored unless absolute) and its own home."""
        resolved = data_dir.resolve() if data_dir is not None and data_dir.is_absolute() else None
        homes = FIXED_HOMES
        own = _own_home()
        # A daemon's HOME of "/" names no real home; "/" is refused as a root anyway.
        if own is not None and own.parent != own and own not in FIXED_HOMES:
            homes = (*FIXED_HOMES, own)
        return cls(data_dir=resolved, homes=homes)

    def refusal(self, path: Path) -> str | None:
        """Why ``path`` (absolute, normalised) may not be a cleanup root, or None if it may."""
        if path.parent == path:
            return "it is the filesystem root"
        return self._system_refusal(path) or self._home_refusal(path) or self._data_refusal(path)

    def _data_refusal(self, path: Path) -> str | None:
        data = self.data_dir
        if data is not None and _inside(data, path):
            what = "is" if data == path else "contains"
            return f"it {what} DATA_DIR {data} (the local Redis data and beat schedule)"
        return None

    def _system_refusal(self, path: Path) -> str | None:
        for tree in self.system_trees:
            if tree in path.parents or tree == path:
                if self._allowed_in_system_tree(path):
                    return None
                where = "is" if tree == path else "lies inside"
                return f"it {where} the system directory {tree}"
            if path in tree.parents:
                return f"it contains the system directory {tree}"
        return None

    def _allowed_in_system_tree(self, path: Path) -> bool:
        if any(_inside(path, place) for place in TEMP_PLACES):
            return True
        if any(place in path.parents for place in LOG_PLACES):
            return True  # /var/log/<app> and below, never /var/log itself
        data = self.data_dir
        return (
            data is not None
            and any(place in data.parents for place in APP_STATE_PLACES)
            and data in path.parents
        )

    def _homes_of(self, path: Path) -> list[Path]:
        """The known home directories relevant to ``path``: the fixed ones and /home/<user>."""
        homes = list(self.homes)
        for parent in HOME_PARENTS:
            if parent in path.parents:
                homes.append(parent / path.relative_to(parent).parts[0])
        return homes

    def _home_refusal(self, path: Path) -> str | None:
        for parent in HOME_PARENTS:
            if _inside(parent, path):
                return f"it holds the users' home directories ({parent})"
        for home in self._homes_of(path):
            if path == home:
                return f"it is the home directory {home} (dotfiles: keys, configuration)"
            if home in path.parents:
                if path.relative_to(home).parts[0].startswith("."):
                    return f"it lies inside a hidden directory of the home directory {home}"
            elif path in home.parents:
                return f"it contains the home directory {home}"
        return None


def validate_roots(
    roots: Sequence[str | os.PathLike[str]], *, policy: RootPolicy | None = None
) -> tuple[Path, ...]:
    """Resolve and check cleanup roots, collapsing duplicates and nested roots to the outer one.

    Raises CleanupError if the list is empty or a root is relative, is (or resolves to) a
    directory the policy refuses (see the module doc), does not exist, is not a directory, or
    is itself a symlink. ``policy`` defaults to ``RootPolicy.for_settings(None)``.
    """
    if isinstance(roots, str):  # a bare string would be iterated character by character
        raise CleanupError(f"cleanup roots must be a list of paths, got the string {roots!r}")
    if not roots:
        raise CleanupError("no cleanup roots given")
    rules = policy if policy is not None else RootPolicy.for_settings(None)
    resolved = list(dict.fromkeys(_check_root(root, rules) for root in roots))
    return tuple(p for p in resolved if not any(q in p.parents for q in resolved))


def _check_root(root: str | os.PathLike[str], policy: RootPolicy) -> Path:
    """Return the resolved root or raise a CleanupError naming it."""
    raw = os.fspath(root)

    def refused(reason: str) -> CleanupError:
        return CleanupError(f"cleanup root {raw!r} is refused: {reason}")

    path = Path(raw)
    if not path.is_absolute():  # relative roots depend on the worker's cwd
        raise refused("it must be an absolute path")
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise refused(f"it cannot be resolved ({exc})") from exc
    # The path as written names the problem in the operator's words; the resolved one catches
    # a symlinked parent that would carry deletions into a refused tree.
    written = Path(os.path.normpath(raw))
    for candidate in (written, resolved):
        reason = policy.refusal(candidate)
        if reason is not None:
            if candidate is resolved and resolved != written:
                reason = f"it resolves to {resolved}, and {reason}"
            raise refused(reason)
    try:
        st = os.lstat(path)  # lstat the path as given, so a symlinked root is seen as one
    except FileNotFoundError as exc:
        raise refused("it does not exist") from exc
    except OSError as exc:
        raise refused(f"it cannot be inspected ({exc.strerror})") from exc
    if stat.S_ISLNK(st.st_mode):
        raise refused("it is a symlink")
    if not stat.S_ISDIR(st.st_mode):
        raise refused("it is not a directory")
    return resolved
