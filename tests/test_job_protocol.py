"""The writer's job interface is declared, not discovered: every job has the four members of ``Job``."""

from __future__ import annotations

import importlib
import inspect
import pickle
import re
from pathlib import Path

import pytest

from magpie.store.writer import FnJob, Job, JobDefaults

ROOT = Path(__file__).resolve().parent.parent
MODULES = (
    "magpie.store.deliveries",
    "magpie.store.dispatches",
    "magpie.store.events",
    "magpie.store.profiles",
    "magpie.store.tokens",
)
MEMBERS = ("key_hash", "profile_keys", "prepare", "run")


def _jobs() -> list[type]:
    found = []
    for name in MODULES:
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            run = getattr(cls, "run", None)
            if cls.__module__ == name and run is not None and "tx" in inspect.signature(run).parameters:
                found.append(cls)
    return found


def test_the_job_protocol_declares_what_the_writer_uses() -> None:
    declared = {name for name in dir(Job) if not name.startswith("_")}
    assert declared == set(MEMBERS)


@pytest.mark.parametrize("cls", _jobs(), ids=lambda cls: cls.__name__)
def test_every_job_class_has_every_member_of_the_protocol(cls: type) -> None:
    assert all(hasattr(cls, member) for member in MEMBERS), cls


def test_at_least_the_known_jobs_are_found() -> None:
    names = {cls.__name__ for cls in _jobs()}
    assert {"PropertiesBody", "StoreEvents", "AcceptTrigger", "RegisterToken", "ClaimWork"} <= names
    assert len(names) >= 19


def test_the_writer_and_the_transaction_find_no_member_by_getattr() -> None:
    for path in ("src/magpie/store/writer.py", "src/magpie/store/transaction.py"):
        text = (ROOT / path).read_text(encoding="utf-8")
        assert not re.search(r"getattr\(job", text), path


def test_job_defaults_leave_no_key_no_profiles_and_nothing_to_prepare() -> None:
    job = FnJob(lambda tx: 1)
    assert isinstance(job, JobDefaults) and job.key_hash is None and job.profile_keys == () and job.prepare() is None


def test_jobs_with_defaults_still_cross_the_process_writers_pipe() -> None:
    from magpie.store.deliveries import ClaimWork
    from magpie.store.profiles import SetConsent

    claim = pickle.loads(pickle.dumps(ClaimWork(owner="w", now_ms=1, lease_ms=2, limit=3)))
    assert (claim.owner, claim.limit, claim.key_hash, claim.profile_keys) == ("w", 3, None, ())
    consent = SetConsent(
        channel="sms", changes={"night": "SUBSCRIBED"}, key_hash="h", env_id=1, user_id="u", device_id=None
    )
    again = pickle.loads(pickle.dumps(consent))
    assert (again.key_hash, again.profile_keys) == ("h", consent.profile_keys)


def test_no_writer_job_is_defined_in_the_http_layer() -> None:
    """Jobs live beside the store code they touch; the API decodes, authenticates and submits."""
    import pkgutil

    import magpie.api

    defined_in_api = []
    for info in pkgutil.walk_packages(magpie.api.__path__, "magpie.api."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            run = getattr(cls, "run", None)
            if cls.__module__ == info.name and run is not None and "tx" in inspect.signature(run).parameters:
                defined_in_api.append(f"{info.name}.{cls.__name__}")
    assert defined_in_api == []
