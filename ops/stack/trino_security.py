"""Trino's authentication in the local stack: HTTPS with a certificate of a CA made once, and
password authentication of every client against a password file Questlog writes.

Made at Trino's first start under `$QUESTLOG_HOME/secrets/trino/` (a 0700 directory):

* `ca.pem`: the CA's certificate (readable by all: clients trust it, `QUESTLOG_TRINO_CA`), and
  `ca-key.pem` (0600), kept to sign a new server certificate;
* `server.pem` (0600): the server's key and certificate (for 127.0.0.1 and localhost, and the
  host of QUESTLOG_TRINO_URL), signed by that CA;
* `<user>` (0600): the generated password of each user Questlog knows: QUESTLOG_TRINO_USER (a
  reader: the analyst's, `questlog query` and `questlog sql`) and QUESTLOG_COMPACT_TRINO_USER (the
  only one who may change tables, compose/trino/iceberg-rules.json);
* `shared-secret` (0600): Trino's internal-communication secret.

The password file Trino reads (`$QUESTLOG_HOME/conf/trino/password.db`, 0600) holds PBKDF2 hashes
of those passwords, never the passwords. Nothing is printed or put on a command line.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import secrets
from pathlib import Path

from ops.stack.secret_files import generated_secret, write_private
from questlog.settings import Settings

PBKDF2_ITERATIONS = 10_000  # Trino's floor is 1,000; it hashes with HMAC-SHA1 (EncryptionUtil)


def secrets_dir(settings: Settings) -> Path:
    return settings.home_path / "secrets" / "trino"


def users(settings: Settings) -> tuple[str, ...]:
    return tuple(dict.fromkeys((settings.trino_user, settings.compact_trino_user)))


def ensure_secret(settings: Settings, name: str) -> str:
    return generated_secret(secrets_dir(settings) / name)


def pbkdf2_hash(password: str, iterations: int = PBKDF2_ITERATIONS, salt: bytes | None = None) -> str:
    """A password as Trino's file authenticator reads it: `iterations:salt:hash`, lower-case hex,
    PBKDF2 with HMAC-SHA1."""
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha1", password.encode(), salt, iterations, dklen=32)
    return f"{iterations}:{salt.hex()}:{digest.hex()}"


def ensure_certificates(settings: Settings) -> tuple[Path, Path]:
    """The CA's certificate and the server's key-and-certificate PEM, made once."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory = secrets_dir(settings)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_cert, ca_key, server = directory / "ca.pem", directory / "ca-key.pem", directory / "server.pem"
    now = datetime.datetime.now(datetime.UTC)
    pem = serialization.Encoding.PEM
    if not (ca_cert.exists() and ca_key.exists()):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Questlog local CA {secrets.token_hex(4)}")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
            .sign(key, hashes.SHA256())
        )
        write_private(
            ca_key,
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        )
        ca_cert.write_bytes(cert.public_bytes(pem))
        os.chmod(ca_cert, 0o644)
        server.unlink(missing_ok=True)  # signed by the CA before: made again
    if not server.exists():
        ca_private = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
        ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        host = settings.trino_host
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName(list(dict.fromkeys(names))), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_private, hashes.SHA256())  # type: ignore[arg-type]
        )
        write_private(
            server,
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
            + cert.public_bytes(pem)
            + ca.public_bytes(pem),
        )
    return ca_cert, server


def write_password_db(settings: Settings, path: Path) -> None:
    """Trino's password file: each user's PBKDF2 hash (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, "".join(f"{user}:{pbkdf2_hash(ensure_secret(settings, user))}\n" for user in users(settings)))
