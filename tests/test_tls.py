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

from mail.backlog import bench_mailbox
from mail.localservers import DovecotServer, free_port
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
    assert "certificate check failed for localhost:" in err and "SSL_CERT_FILE" in err


def _certificate(name: str, issuer_key, issuer_name, key, *, ca: bool = False):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


class _TlsDovecot(DovecotServer):
    """Dovecot with TLS: STARTTLS on its IMAP port, implicit TLS on ``imaps_port``."""

    def __init__(self, directory, cert, key, **kw) -> None:
        self.cert, self.key, self.imaps_port = cert, key, free_port()
        super().__init__(directory, **kw)

    def _config(self) -> str:
        conf = super()._config()
        files = (f"ssl_server_cert_file = {self.cert}\nssl_server_key_file = {self.key}" if self.version >= (2, 4)
                 else f"ssl_cert = <{self.cert}\nssl_key = <{self.key}")
        conf = conf.replace("ssl = no", "ssl = yes\n" + files)
        address = "listen" if self.version >= (2, 4) else "address"
        return conf.replace("  inet_listener imaps {\n    port = 0\n  }",
                            f"  inet_listener imaps {{\n    {address} = {self.host}\n    port = {self.imaps_port}\n  }}")


@pytest.fixture
def dovecot_with_own_ca(tmp_path):
    """A Dovecot whose certificate a company's own CA signed (not one this machine trusts), and that CA."""
    import os

    from conftest import _need_dovecot

    _need_dovecot()
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Example Corp internal CA")])
    ca = _certificate(ca_name, ca_key, ca_name, ca_key, ca=True)
    cert = _certificate(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]), ca_key, ca_name, key)
    ca_path, cert_path, key_path = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o644)  # Dovecot reads it as root, then as its own user
    server = _TlsDovecot(tmp_path / "dovecot", cert_path, key_path)
    server.start()
    try:
        server.deliver_maildir(None, bench_mailbox(3, "support@example.com"))
        yield server, ca_path
    finally:
        server.cleanup()


@pytest.mark.dovecot
@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_a_server_certificate_from_our_own_ca_is_refused_until_ssl_cert_file_trusts_that_ca(
        dovecot_with_own_ca, security, tmp_path, capsys, monkeypatch):
    server, ca = dovecot_with_own_ca
    port = server.imaps_port if security == "tls" else server.port
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"""
[account]
address = "support@example.com"
[imap]
host = "localhost"
port = {port}
security = "{security}"
username = "{server.username}"
password_command = "printf '%s' '{server.password}'"
[storage]
database = "{tmp_path / 'h.db'}"
""")
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    code = main(["--config", str(cfg), "sync"])
    captured = capsys.readouterr()
    assert code == 1 and captured.out == "" and captured.err.count("\n") == 1
    assert f"certificate check failed for localhost:{port} (unable to get local issuer certificate)" in captured.err
    assert "point SSL_CERT_FILE at that CA's PEM file" in captured.err

    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    code = main(["--config", str(cfg), "sync"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.startswith("3 new messages")


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the interface
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_security_none_to_a_host_off_this_machine_warns_that_the_password_goes_unencrypted(tmp_path, capsys):
    from mail.localservers import free_port

    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no network address but loopback")
    port = free_port()

    def config(host: str, smtp_username: str) -> str:
        path = tmp_path / f"{host}-{smtp_username or 'relay'}.toml"
        path.write_text(f"""
[account]
address = "support@example.com"
[imap]
host = "{host}"
port = {port}
security = "none"
username = "support"
password_command = "echo pw"
[smtp]
host = "{host}"
port = {port}
security = "none"
username = "{smtp_username}"
{'password_command = "echo pw"' if smtp_username else ''}
[storage]
database = "{tmp_path / 'h.db'}"
""")
        return str(path)

    assert main(["--config", config(address, ""), "sync"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (f'heard: warning: [imap] security = "none" sends the password for \'support\' to {address} '
                      'unencrypted: set security = "tls" or "starttls" (none is for a server on this machine)')
    assert len(err) == 2 and "refused the connection" in err[1]  # an SMTP relay without a login: no warning

    assert main(["--config", config(address, "support"), "sync"]) == 1
    err = capsys.readouterr().err
    assert "[imap] security" in err and '[smtp] security = "none" sends the password' in err

    assert main(["--config", config("127.0.0.1", "support"), "sync"]) == 1  # loopback: a local bridge, say
    assert "warning" not in capsys.readouterr().err
    assert main(["--config", config(address, "support"), "tickets"]) == 0  # no login, no warning
    assert "warning" not in capsys.readouterr().err
