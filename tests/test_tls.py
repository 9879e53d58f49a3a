"""The PB service over TLS, configured exactly as docs/protocol.md shows."""

from __future__ import annotations

import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial import unittest

from buildnotify.config import HubConfig
from buildnotify.server import Hub
from tests.pbclient import Client, RecordingMind, wait_until
from tests.support import database_url, provider_configs


def self_signed(directory: str) -> tuple[str, str]:
    """A certificate for localhost and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = os.path.join(directory, "hub.crt"), os.path.join(directory, "hub.key")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return cert_path, key_path


class TLSTests(unittest.TestCase):
    async def test_a_client_trusting_the_hub_certificate_watches_over_tls(self) -> None:
        directory = self.mktemp()
        os.makedirs(os.path.join(directory, "ca"))
        cert, key = self_signed(directory)
        os.link(cert, os.path.join(directory, "ca", "hub.pem"))
        config = HubConfig(
            http="tcp:0:interface=127.0.0.1",
            pb=f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}",
            database=database_url(self, "sqlite"),
            providers=provider_configs(),
        )
        hub = await Hub.start(config, reactor)
        self.addCleanup(lambda: Deferred.fromCoroutine(hub.stop()))
        port = hub.pb_port.getHost().port
        client = await Client.connect(self, f"tls:localhost:{port}:trustRoots={directory}/ca")
        mind = RecordingMind()
        perspective = await client.anonymous(mind)
        answer = await perspective.callRemote("watch", ["acme/widget"])
        self.assertEqual(answer["watching"], ["acme/widget"])
        self.assertEqual(await perspective.callRemote("ping"), "pong")

        os.makedirs(os.path.join(directory, "other-ca"))
        untrusting = await Client.connect(self, f"tls:localhost:{port}:trustRoots={directory}/other-ca")
        # The handshake fails and the connection ends before any PB traffic.
        await wait_until(lambda: untrusting.broker.disconnected, what="the untrusted connection to close")
        self.assertEqual(len(hub.service.sessions), 1)  # only the trusting client's
