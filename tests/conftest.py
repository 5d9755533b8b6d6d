"""Shared fixtures: grid cases are loaded once per session (tests deep-copy before mutating)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_addoption(parser):
    parser.addoption(
        "--record-goldens",
        action="store_true",
        help="re-record tests/integration/golden/ from the current code",
    )


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
