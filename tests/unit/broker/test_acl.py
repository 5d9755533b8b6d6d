"""Mosquitto password and ACL files (broker/acl.py), checked against the real binary."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import stat
import subprocess
import tomllib

import pytest

from clustersim.broker.acl import (
    AclFiles,
    acl_text,
    passwd_line,
    verify_password,
    write_acl_files,
)
from clustersim.broker.mosquitto import MosquittoBroker, mosquitto_path
from clustersim.broker.transport import MqttTransport
from clustersim.errors import BrokerError

MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
needs_mosquitto = pytest.mark.skipif(mosquitto_path() is None, reason="mosquitto not installed")


def run(coro, timeout_s: float = 30.0):
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


def test_passwd_line_format():
    line = passwd_line("C1", "secret", salt=b"0123456789ab")
    user, rest = line.split(":", 1)
    empty, alg, iterations, salt, digest = rest.split("$")
    assert (user, empty, alg, iterations) == ("C1", "", "7", "101")
    assert base64.b64decode(salt) == b"0123456789ab"
    assert len(base64.b64decode(digest)) == 64
    assert verify_password(line, "secret") and not verify_password(line, "Secret")
    assert passwd_line("C1", "secret") != passwd_line("C1", "secret")  # random salt
    assert not verify_password("C1:plain", "plain")


@pytest.mark.skipif(not os.path.exists(MOSQUITTO_PASSWD), reason="mosquitto_passwd not installed")
def test_passwd_line_matches_mosquitto_passwd(tmp_path):
    """Same salt and iterations as `mosquitto_passwd -b` gives the very same line."""
    path = tmp_path / "pw"
    subprocess.run(
        [MOSQUITTO_PASSWD, "-c", "-b", str(path), "agent.7", "pä ss:wörd"],
        check=True,
        capture_output=True,
    )
    theirs = path.read_text().strip()
    _, _, iterations, salt_b64, _ = theirs.split(":", 1)[1].split("$")
    ours = passwd_line(
        "agent.7", "pä ss:wörd", salt=base64.b64decode(salt_b64), iterations=int(iterations)
    )
    assert ours == theirs
    assert verify_password(theirs, "pä ss:wörd")


def test_write_acl_files(tmp_path):
    out = tmp_path / "creds"
    files = write_acl_files(["C1", "C2", "plant"], out, passwords={"C2": "given-pw"})
    assert isinstance(files, AclFiles)
    assert set(files.passwords) == {"plant", "C1", "C2"}
    assert files.passwords["C2"] == "given-pw"
    assert len(files.passwords["C1"]) >= 24 and files.passwords["C1"] != files.passwords["plant"]
    assert "given-pw" not in repr(files) and files.passwords["C1"] not in repr(files)
    # password file: one valid line per node
    lines = files.passwd_path.read_text().splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["plant", "C1", "C2"]
    for ln in lines:
        assert verify_password(ln, files.passwords[ln.split(":")[0]])
    # credentials: TOML, owner-only
    assert tomllib.loads(files.credentials_path.read_text()) == files.passwords
    assert stat.S_IMODE(files.credentials_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.passwd_path.stat().st_mode) == 0o600
    readme = (out / "README.txt").read_text()
    assert "password_file" in readme and "acl_file" in readme
    # ACL: per-user blocks
    acl = files.acl_path.read_text()
    assert acl == acl_text(["C1", "C2"], "plant")
    assert "user C1\ntopic read clustersim/#\ntopic write clustersim/+/setpoint/C1/#" in acl
    assert "topic write clustersim/+/meas/plant/#" in acl
    assert "meas/C1" not in acl and "clock/C1" not in acl
    # rewriting replaces the files
    again = write_acl_files(["C1"], out)
    assert set(again.passwords) == {"plant", "C1"}
    assert "C2" not in again.acl_path.read_text()


@pytest.mark.parametrize(
    ("nodes", "kw", "match"),
    [
        (["C1", "bad name"], {}, "not valid"),
        (["C1", "a/b"], {}, "not valid"),
        (["C1", "#"], {}, "not valid"),
        (["C1", ""], {}, "not valid"),
        (["C1", "-x"], {}, "not valid"),
        (["C1", "all"], {}, "reserved"),
        (["C1", "C1"], {}, "twice"),
        (["C1"], {"plant": "p+"}, "not valid"),
        (["C1"], {"passwords": {"C9": "x"}}, "unknown node"),
        (["C1"], {"passwords": {"C1": ""}}, "non-empty"),
        ("C1", {}, "sequence"),
    ],
)
def test_bad_input(tmp_path, nodes, kw, match):
    with pytest.raises(ValueError, match=match) as e:
        write_acl_files(nodes, tmp_path, **kw)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------- against mosquitto


@pytest.fixture
def secured(tmp_path):
    """Mosquitto with the password and ACL files of a run with plant, C1 and C2."""
    if mosquitto_path() is None:
        pytest.skip("mosquitto is not installed")
    files = write_acl_files(["C1", "C2"], tmp_path / "creds")
    with MosquittoBroker(
        passwd_file=files.passwd_path, acl_file=files.acl_path, workdir=tmp_path / "mq"
    ) as broker:
        yield broker, files


def _url(broker: MosquittoBroker, user: str, password: str) -> str:
    return f"mqtt://{user}:{password}@127.0.0.1:{broker.port}"


@needs_mosquitto
def test_acl_on_mosquitto(secured):
    broker, files = secured
    pw = files.passwords

    async def main():
        async with (
            MqttTransport(_url(broker, "C2", pw["C2"]), "C2") as watcher,
            MqttTransport(_url(broker, "C1", pw["C1"]), "C1") as c1,
            MqttTransport(_url(broker, "plant", pw["plant"]), "plant") as plant,
        ):
            await watcher.subscribe("clustersim/#")
            # forbidden: another agent's setpoint, a measurement, a clock tick (dropped silently)
            await c1.publish("clustersim/r1/setpoint/C2/plant", b"forged")
            await c1.publish("clustersim/r1/meas/plant/C1", b"forged")
            await c1.publish("clustersim/r1/clock/plant/all", b"forged")
            await plant.publish("clustersim/r1/setpoint/C1/plant", b"forged")
            # allowed
            await c1.publish("clustersim/r1/setpoint/C1/plant", b"ok-setpoint")
            await c1.publish("clustersim/r1/boundary/C1/C2", b"ok-boundary")
            await plant.publish("clustersim/r1/meas/plant/C1", b"ok-meas")
            got = []
            while (m := await watcher.receive(1.0)) is not None:
                got.append(m)
            assert sorted(got) == sorted(
                [
                    ("clustersim/r1/setpoint/C1/plant", b"ok-setpoint"),
                    ("clustersim/r1/boundary/C1/C2", b"ok-boundary"),
                    ("clustersim/r1/meas/plant/C1", b"ok-meas"),
                ]
            )
            assert c1.queued == 0  # the broker acknowledged the forged ones too

    run(main())


@needs_mosquitto
def test_wrong_password_and_anonymous_are_refused(secured):
    broker, files = secured

    async def main():
        for url in (
            _url(broker, "C1", files.passwords["C1"] + "x"),
            _url(broker, "C1", files.passwords["C2"]),
            _url(broker, "nobody", "x"),
            broker.url,  # anonymous
        ):
            t = MqttTransport(url, "intruder", connect_timeout_s=3.0)
            with pytest.raises(BrokerError) as e:
                await t.start()
            msg = str(e.value)
            assert "refused" in msg and "\n" not in msg
            assert files.passwords["C1"] not in msg and files.passwords["C2"] not in msg
            await t.close()

    run(main())
