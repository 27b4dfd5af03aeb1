"""Which directories may be cleanup roots: system trees and homes are refused by prefix."""

from __future__ import annotations

from pathlib import Path

import pytest

from personal_assistant.workers.cleanup.roots import CleanupError, RootPolicy, validate_roots

DEFAULT = RootPolicy()  # /root as the only home besides /home/<user>, no DATA_DIR


def refusal(path: str, policy: RootPolicy = DEFAULT) -> str | None:
    return policy.refusal(Path(path))


# --- the filesystem root and system trees ---------------------------------------------------


def test_filesystem_root_is_refused() -> None:
    with pytest.raises(
        CleanupError, match="cleanup root '/' is refused: it is the filesystem root"
    ):
        validate_roots(["/"])


def test_a_root_that_resolves_to_the_filesystem_root_is_refused() -> None:
    with pytest.raises(CleanupError, match=r"'/tmp/\.\.' is refused: it is the filesystem root"):
        validate_roots(["/tmp/.."])


@pytest.mark.parametrize(
    "system",
    ["/etc", "/usr", "/var", "/bin", "/sbin", "/lib", "/lib64", "/boot", "/proc", "/sys", "/dev"],
)
def test_system_directories_themselves_are_refused(system: str) -> None:
    with pytest.raises(CleanupError, match=f"it is the system directory {system}$"):
        validate_roots([system])


def test_a_system_directory_written_with_a_trailing_slash_is_refused() -> None:
    with pytest.raises(CleanupError, match="'/etc/' is refused: it is the system directory /etc"):
        validate_roots(["/etc/"])


@pytest.mark.parametrize(
    ("inside", "tree"),
    [
        ("/usr/lib", "/usr"),
        ("/var/lib", "/var"),
        ("/etc/ssl", "/etc"),
        ("/boot/efi", "/boot"),
        ("/proc/self", "/proc"),
        ("/sys/kernel", "/sys"),
        ("/dev/shm", "/dev"),
        ("/run/user", "/run"),
        ("/usr/local/tmp", "/usr"),
        ("/var/spool/cron", "/var"),
        ("/usr/lib/../lib/python3", "/usr"),
    ],
)
def test_directories_inside_system_trees_are_refused_by_prefix(inside: str, tree: str) -> None:
    with pytest.raises(CleanupError, match=f"it lies inside the system directory {tree}$"):
        validate_roots([inside])


@pytest.mark.parametrize("sibling", ["/usrdata/tmp", "/variable", "/etcetera/logs", "/libs"])
def test_a_directory_that_only_shares_a_name_prefix_with_a_system_tree_is_allowed(
    sibling: str,
) -> None:
    assert refusal(sibling) is None


@pytest.mark.parametrize(
    "place",
    ["/tmp", "/tmp/uploads", "/var/tmp", "/var/tmp/pa", "/var/log/pa", "/var/log/pa/workers"],
)
def test_the_usual_temp_and_log_places_are_allowed(place: str) -> None:
    assert refusal(place) is None


@pytest.mark.parametrize("place", ["/srv/pa/tmp", "/opt/pa/logs", "/data/tmp", "/app/var/tmp"])
def test_application_directories_outside_system_trees_are_allowed(place: str) -> None:
    assert refusal(place) is None


def test_var_log_itself_is_refused_as_it_holds_the_systems_own_logs() -> None:
    assert refusal("/var/log") == "it lies inside the system directory /var"


@pytest.mark.parametrize(("target", "inside"), [("/etc", "ssl"), ("/usr", "lib"), ("/var", "lib")])
def test_a_root_reaching_a_system_tree_through_a_symlinked_parent_is_refused(
    tmp_path: Path, target: str, inside: str
) -> None:
    (tmp_path / "alias").symlink_to(target, target_is_directory=True)
    with pytest.raises(
        CleanupError,
        match=f"it resolves to {target}/{inside}, and it lies inside the system directory {target}",
    ):
        validate_roots([tmp_path / "alias" / inside])


# --- DATA_DIR in /var/lib/<app> -------------------------------------------------------------


def test_directories_below_a_data_dir_in_var_lib_are_allowed() -> None:
    policy = RootPolicy(data_dir=Path("/var/lib/personal-assistant"))
    assert refusal("/var/lib/personal-assistant/tmp", policy) is None
    assert refusal("/var/lib/personal-assistant/logs/workers", policy) is None


def test_the_data_dir_itself_and_its_neighbours_stay_refused() -> None:
    policy = RootPolicy(data_dir=Path("/var/lib/personal-assistant"))
    assert refusal("/var/lib/personal-assistant", policy) is not None  # holds Redis data
    assert refusal("/var/lib/dpkg", policy) is not None
    assert refusal("/var/lib", policy) is not None


@pytest.mark.parametrize("data_dir", ["/var/lib", "/usr/share/pa", "/etc/pa", "/var/spool/pa"])
def test_a_data_dir_outside_the_application_state_places_grants_nothing(data_dir: str) -> None:
    policy = RootPolicy(data_dir=Path(data_dir))
    assert refusal(f"{data_dir}/tmp", policy) is not None


@pytest.mark.parametrize("root", ["/srv/pa/var", "/srv/pa", "/srv"])
def test_the_data_dir_or_a_root_containing_it_is_refused_as_it_holds_redis_data(
    root: str,
) -> None:
    policy = RootPolicy(data_dir=Path("/srv/pa/var"))
    assert "DATA_DIR /srv/pa/var" in (refusal(root, policy) or "")
    assert refusal("/srv/pa/var/tmp", policy) is None
    assert refusal("/srv/pa/uploads", policy) is None


def test_a_relative_data_dir_is_ignored_by_the_workers_policy() -> None:
    assert RootPolicy.for_settings(Path("var")).data_dir is None


def test_the_workers_policy_resolves_the_data_dir(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real", target_is_directory=True)
    policy = RootPolicy.for_settings(tmp_path / "alias")
    assert policy.data_dir == (tmp_path / "real").resolve()


# --- home directories and their dotfiles ----------------------------------------------------


def test_the_directory_of_all_homes_is_refused() -> None:
    assert refusal("/home") == "it holds the users' home directories (/home)"


@pytest.mark.parametrize("home", ["/home/alice", "/root"])
def test_a_home_directory_is_refused_as_it_holds_dotfiles(home: str) -> None:
    with pytest.raises(CleanupError, match=f"it is the home directory {home} "):
        validate_roots([home])


@pytest.mark.parametrize(
    "hidden", ["/home/alice/.ssh", "/home/alice/.config/app/tmp", "/root/.cache", "/root/.gnupg"]
)
def test_a_root_inside_a_hidden_directory_of_a_home_is_refused(hidden: str) -> None:
    with pytest.raises(CleanupError, match="inside a hidden directory of the home directory"):
        validate_roots([hidden])


@pytest.mark.parametrize("place", ["/home/alice/project/var/tmp", "/root/app/logs"])
def test_ordinary_subdirectories_of_a_home_are_allowed(place: str) -> None:
    assert refusal(place) is None


def test_the_workers_own_home_is_protected_wherever_it_is(tmp_path: Path) -> None:
    home = tmp_path / "service"
    (home / ".ssh").mkdir(parents=True)
    (home / "work").mkdir()
    policy = RootPolicy(homes=(home,))

    for refused, reason in [
        (home, "is the home directory"),
        (home / ".ssh", "inside a hidden directory"),
        (tmp_path, "contains the home directory"),
    ]:
        with pytest.raises(CleanupError, match=reason):
            validate_roots([refused], policy=policy)
    assert validate_roots([home / "work"], policy=policy) == ((home / "work").resolve(),)


def test_the_workers_policy_knows_its_home_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "service"))
    assert (tmp_path / "service").resolve() in RootPolicy.for_settings(None).homes


def test_a_home_of_slash_adds_no_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/")
    assert RootPolicy.for_settings(None).homes == (Path("/root"),)


# --- other checks on a root -----------------------------------------------------------------


def test_a_missing_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CleanupError, match=r"'.*/nope' is refused: it does not exist"):
        validate_roots([tmp_path / "nope"])


def test_a_file_given_as_root_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "file.log"
    file.write_text("x")
    with pytest.raises(CleanupError, match="is not a directory"):
        validate_roots([file])
    assert file.exists()


@pytest.mark.parametrize("relative", ["logs", "./tmp", "", "../x"])
def test_a_relative_root_is_refused(relative: str) -> None:
    with pytest.raises(CleanupError, match="must be an absolute path"):
        validate_roots([relative])


def test_a_root_that_is_itself_a_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    with pytest.raises(CleanupError, match=r"'.*/link' is refused: it is a symlink"):
        validate_roots([tmp_path / "link"])


def test_an_empty_root_list_is_refused() -> None:
    with pytest.raises(CleanupError, match="no cleanup roots"):
        validate_roots([])


def test_a_single_string_instead_of_a_list_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CleanupError, match="list of paths"):
        validate_roots(str(tmp_path))


def test_duplicate_and_nested_roots_collapse_to_the_outer_root(tmp_path: Path) -> None:
    inner = tmp_path / "a" / "b"
    inner.mkdir(parents=True)
    other = tmp_path / "c"
    other.mkdir()
    roots = validate_roots([inner, str(tmp_path / "a"), tmp_path / "a" / ".", other, other])
    assert roots == ((tmp_path / "a").resolve(), other.resolve())
