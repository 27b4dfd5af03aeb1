"""docker/Dockerfile builds the production image as the rules say (tools/compose_check.py): a
pinned slim base, the package installed from its wheel in a final stage that runs as a fixed
non-root user, with a HEALTHCHECK, no compiler and no pip cache; a copy that breaks a rule is
caught with a line naming it. The build context holds only what the wheel is built from."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from compose_check import check_dockerfile, dockerfile_stages

ROOT = Path(__file__).resolve().parents[3]

DOCKERFILE = ROOT / "docker" / "Dockerfile"
TEXT = DOCKERFILE.read_text(encoding="utf-8")
FINAL_USER = "USER 10001:10001"


def edited(old: str, new: str) -> str:
    """The Dockerfile with ``old`` (which must be there) replaced by ``new``."""
    assert old in TEXT
    return TEXT.replace(old, new)


def test_the_shipped_dockerfile_passes_every_check() -> None:
    assert check_dockerfile(TEXT) == []


def test_the_final_stage_is_production_on_a_pinned_slim_base_shared_with_the_builder() -> None:
    stages = dockerfile_stages(TEXT)

    assert [name for _, name, _ in stages] == ["builder", "production"]
    bases = {image for image, _, _ in stages}
    assert len(bases) == 1
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", bases.pop())


def test_the_final_stage_installs_the_wheel_with_the_postgres_extra_and_no_cache() -> None:
    final = dict(dockerfile_stages(TEXT)[-1][2])
    run = next(rest for keyword, rest in dockerfile_stages(TEXT)[-1][2] if "pip install" in rest)

    assert "--no-index" in run
    assert "--no-cache-dir" in run
    assert '"personal-assistant-workers[postgres]"' in run
    assert "from=builder" in run  # the wheels are mounted, never copied into a layer
    assert "PYTHONDONTWRITEBYTECODE=1" in final["ENV"]
    assert "PYTHONUNBUFFERED=1" in final["ENV"]


def test_the_image_tag_in_compose_is_the_package_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "version"
    ]
    compose = yaml.safe_load((ROOT / "docker" / "docker-compose.prod.yml").read_text("utf-8"))

    assert compose["x-app"]["image"] == f"personal-assistant-workers:{version}"


@pytest.mark.parametrize(
    ("user", "problem"),
    [
        ("USER root", "the final stage runs as root (USER root)"),
        ("USER 0", "the final stage runs as root (USER 0)"),
        ("USER 0:10001", "the final stage runs as root (USER 0)"),
        ("", "the final stage sets no USER: it runs as root"),
    ],
)
def test_a_final_stage_running_as_root_is_named(user: str, problem: str) -> None:
    assert check_dockerfile(edited(FINAL_USER, user)) == [problem]


def test_a_user_set_only_in_the_builder_does_not_count_for_the_final_stage() -> None:
    text = edited(FINAL_USER, "").replace("WORKDIR /src", "WORKDIR /src\nUSER 10001", 1)

    assert check_dockerfile(text) == ["the final stage sets no USER: it runs as root"]


def test_a_later_root_user_wins_over_an_earlier_one() -> None:
    text = edited(FINAL_USER, f"{FINAL_USER}\nUSER root")

    assert check_dockerfile(text) == ["the final stage runs as root (USER root)"]


@pytest.mark.parametrize(
    ("base", "problem"),
    [
        ("python:latest", "image python:latest is not pinned (:latest)"),
        ("python", "image python is not pinned (no tag)"),
    ],
)
def test_an_unpinned_base_image_is_named_for_each_stage(base: str, problem: str) -> None:
    text = edited("ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm", f"ARG PYTHON_IMAGE={base}")

    assert check_dockerfile(text) == [f"stage builder: {problem}", f"stage production: {problem}"]


def test_a_stage_built_from_an_earlier_stage_is_not_an_image_to_pin() -> None:
    text = edited("FROM ${PYTHON_IMAGE} AS production", "FROM builder AS production")

    assert check_dockerfile(text) == []


def test_a_final_stage_without_a_healthcheck_is_named() -> None:
    text = re.sub(r"HEALTHCHECK .*?\]\n", "HEALTHCHECK NONE\n", TEXT, flags=re.S)

    assert check_dockerfile(text) == ["the final stage has no HEALTHCHECK"]


def test_a_compiler_in_the_final_stage_is_named_and_one_in_the_builder_is_not() -> None:
    install = "RUN apt-get update && apt-get install -y --no-install-recommends gcc\n"

    in_final = edited("WORKDIR /app\n", f"{install}WORKDIR /app\n")
    in_builder = edited("WORKDIR /src\n", f"WORKDIR /src\n{install}")

    assert check_dockerfile(in_final) == ["the final stage installs a compiler (gcc)"]
    assert check_dockerfile(in_builder) == []


def test_a_pip_install_keeping_its_cache_is_named() -> None:
    text = edited("pip install --no-cache-dir", "pip install").replace(
        "    PIP_NO_CACHE_DIR=1 \\\n    PIP_DISABLE_PIP_VERSION_CHECK=1 \\\n    DATA_DIR",
        "    PIP_DISABLE_PIP_VERSION_CHECK=1 \\\n    DATA_DIR",
    )

    assert check_dockerfile(text) == [
        "the final stage's pip install keeps pip's cache (--no-cache-dir)"
    ]


def test_the_build_context_holds_only_what_the_wheel_is_built_from() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]

    assert lines[0] == "*"
    assert {line[1:] for line in lines if line.startswith("!")} == {
        "pyproject.toml",
        "README.md",
        "src/",
    }
    copied = [rest for keyword, rest in dockerfile_stages(TEXT)[0][2] if keyword == "COPY"]
    assert copied == ["pyproject.toml README.md ./", "src ./src"]
