"""Shared fixtures and the suite's rules: brokers on free ports, Hypothesis derandomized and a
skip counted as a failure under ``CI=true``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

CI = os.environ.get("CI") == "true"
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if CI else "dev")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_addoption(parser):
    parser.addoption(
        "--record-goldens",
        action="store_true",
        help="re-record tests/integration/golden/ from the current code",
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under ``CI=true`` a test that skips (a missing binary, data set or package) fails: CI
    installs everything the suite needs, so a skip there hides a test that never ran."""
    outcome = yield
    rep = outcome.get_result()
    if (
        CI
        and rep.skipped
        and not hasattr(rep, "wasxfail")
        and not item.config.getoption("--record-goldens")
    ):
        reason = rep.longrepr[-1] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = f"skipped under CI=true (CI must provide what the test needs): {reason}"


@pytest.fixture(scope="session", autouse=True)
def _context_cache_dir(tmp_path_factory):
    """Partition contexts kept on disk (large cases) go to a folder of the test session, shared
    by the processes it starts, never to the user's cache."""
    old = os.environ.get("CLUSTERSIM_CACHE_DIR")
    os.environ["CLUSTERSIM_CACHE_DIR"] = str(tmp_path_factory.mktemp("clustersim-cache"))
    yield
    if old is None:
        os.environ.pop("CLUSTERSIM_CACHE_DIR", None)
    else:
        os.environ["CLUSTERSIM_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def builtin_cases() -> list[str]:
    """The built-in grid cases, in the order ``clustersim cases`` lists them."""
    return [
        "ieee33",
        "ieee51",
        "ieee69",
        "ieee123",
        "case1197",
        "simbench-mv-rural",
        "simbench-mv-semiurb",
    ]


@pytest.fixture(scope="session")
def case_info_keys() -> set[str]:
    """The keys of a case description (``describe_case``, ``clustersim case-info --json``)."""
    return {
        "name",
        "n_buses",
        "n_lines",
        "radial",
        "total_load_mw",
        "base_losses_kw",
        "min_vm_pu",
        "resources",
    }


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout (present on developer machines and in CI)."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


# ---------------------------------------------------------------- MQTT brokers
# Tests never use a broker already running on this machine: each fixture starts its own on a
# free loopback port. CLUSTERSIM_TEST_BROKER=embedded makes `mqtt_broker` use amqtt even when
# mosquitto is installed.


@pytest.fixture(scope="session")
def embedded_broker():
    """An amqtt broker (child process) on a free loopback port, shared by the session."""
    from clustersim.broker.embedded import EmbeddedBroker

    with EmbeddedBroker() as broker:
        yield broker


@pytest.fixture
def mosquitto_broker(tmp_path):
    """A private mosquitto on a free loopback port (skips when the binary is absent)."""
    from clustersim.broker.mosquitto import MosquittoBroker, mosquitto_path

    if mosquitto_path() is None:
        pytest.skip("mosquitto is not installed")
    with MosquittoBroker(workdir=tmp_path / "mosquitto") as broker:
        yield broker


@pytest.fixture
def mqtt_broker(tmp_path):
    """A started broker with ``.url``: mosquitto when installed, else the embedded amqtt."""
    import os

    from clustersim.broker.embedded import EmbeddedBroker
    from clustersim.broker.mosquitto import MosquittoBroker, mosquitto_path

    if mosquitto_path() is not None and os.environ.get("CLUSTERSIM_TEST_BROKER") != "embedded":
        with MosquittoBroker(workdir=tmp_path / "mosquitto") as broker:
            yield broker
    else:
        with EmbeddedBroker() as broker:
            yield broker
