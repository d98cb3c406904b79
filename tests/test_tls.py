"""TLS is verified by default: a server with a certificate we cannot trust is refused in one line."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tui.cli import main


@pytest.fixture
def self_signed_imaps(tmp_path):
    """A real TLS listener on loopback with a self-signed certificate, greeting like IMAP."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_path, key_path)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (socket.timeout, OSError):
                continue
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"* OK IMAP4rev1 ready\r\n")
            except (ssl.SSLError, OSError):
                pass  # the client refused our certificate: what the test wants

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield listener.getsockname()[1]
    stop.set()
    t.join(2)
    listener.close()


def test_untrusted_certificate_is_refused_in_one_line(self_signed_imaps, tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"""
[account]
address = "support@example.com"
[imap]
host = "localhost"
port = {self_signed_imaps}
security = "tls"
username = "support"
password_command = "echo pw"
[storage]
database = "{tmp_path / 'h.db'}"
""")
    code = main(["--config", str(cfg), "sync"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert "certificate check failed for localhost:" in err and "[imap] host" in err
