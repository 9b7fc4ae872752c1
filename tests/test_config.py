"""The settings table: one default per setting, read from the environment, documented in docs/configuration.md."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from magpie.config import Settings, configuration_markdown

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def test_configuration_doc_is_generated_from_the_table() -> None:
    assert DOC.read_text(encoding="utf-8") == configuration_markdown(), (
        "docs/configuration.md is stale: run `make docs`"
    )


def test_settings_from_an_empty_environment_equal_the_defaults() -> None:
    # One default per setting: the object built in code and the one read from the environment agree.
    assert Settings.from_env({}) == Settings()


def test_every_setting_has_a_variable_and_a_description_listed_once() -> None:
    fields = dataclasses.fields(Settings)
    names = [f.metadata["env"] for f in fields]
    assert len(names) == len(set(names))
    for f in fields:
        assert f.metadata["env"].startswith("MAGPIE_") and f.metadata["description"], f.name
        assert f"`{f.metadata['env']}`" in DOC.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("variable", "raw", "field", "expected"),
    [
        pytest.param("MAGPIE_PORT", "9000", "port", 9000, id="int"),
        pytest.param("MAGPIE_RATE_LIMIT", "2.5", "rate_limit_per_key", 2.5, id="float"),
        pytest.param("MAGPIE_BOOTSTRAP", "no", "bootstrap", False, id="bool-no"),
        pytest.param("MAGPIE_ACCESS_LOG", "true", "access_log", True, id="bool-true"),
        pytest.param("MAGPIE_DATA_DIR", "/srv/magpie", "data_dir", Path("/srv/magpie"), id="path"),
        pytest.param(
            "MAGPIE_DATABASE_URL",
            "postgresql://u@h/db",
            "database_url_override",
            "postgresql://u@h/db",
            id="optional-text",
        ),
        pytest.param("MAGPIE_WRITER", "thread", "writer", "thread", id="text"),
    ],
)
def test_settings_read_each_type_from_the_environment(variable: str, raw: str, field: str, expected: object) -> None:
    assert getattr(Settings.from_env({variable: raw}), field) == expected


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        pytest.param("MAGPIE_PORT", "eighty", id="int"),
        pytest.param("MAGPIE_REUSE_PORT", "maybe", id="bool"),
        pytest.param("MAGPIE_POLL_INTERVAL", "fast", id="float"),
    ],
)
def test_settings_name_the_variable_that_does_not_parse(variable: str, raw: str) -> None:
    with pytest.raises(ValueError, match=variable):
        Settings.from_env({variable: raw})


def test_operations_guide_documents_every_environment_setting_key() -> None:
    from magpie.domain.environment import _PROVIDER_FIELDS, DEFAULTS

    guide = (DOC.parent / "operations.md").read_text(encoding="utf-8")
    for key in DEFAULTS:
        assert f"`{key}`" in guide, key
    for provider, (required, optional) in _PROVIDER_FIELDS.items():
        assert f"  {provider}:" in guide, provider
        for field in required | optional:
            assert f"{field}:" in guide, (provider, field)


def test_every_magpie_variable_the_code_reads_is_documented() -> None:
    import re

    root = DOC.parent.parent
    sources = [*root.glob("src/**/*.py"), *root.glob("tests/**/*.py"), *root.glob("bench/**/*.py"), root / "Makefile"]
    read = {
        name for path in sources for name in re.findall(r"\bMAGPIE_[A-Z_]+[A-Z]\b", path.read_text(encoding="utf-8"))
    }
    documented = set(re.findall(r"`(MAGPIE_[A-Z_]+)`", DOC.read_text(encoding="utf-8")))
    assert read - documented == set()
