"""A throwaway certificate authority and server certificate for one cluster's API server.

GKE gives every cluster its own CA and publishes it base64-encoded in `masterAuth.clusterCaCertificate`;
clients trust the API server through it. We do the same at start: a fresh CA per cluster, a server
certificate for 127.0.0.1/localhost signed by it, and the files uvicorn needs to serve TLS.
"""

from __future__ import annotations

import datetime
import ipaddress
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_VALIDITY = datetime.timedelta(days=30)


@dataclass(frozen=True)
class ServingCerts:
    ca_pem: str
    cert_file: str      # server certificate (PEM), then the CA, as uvicorn's ssl_certfile
    key_file: str       # server private key (PEM, unencrypted)
    ca_file: str        # the CA alone, for clients that want a file (kubectl's certificate-authority)
    directory: str


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(_name("sandbox-cluster-ca")).issuer_name(_name("sandbox-cluster-ca"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def _server(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
            ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    names = [x509.DNSName("localhost"), x509.DNSName("kubernetes.default.svc"),
             x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (x509.CertificateBuilder()
            .subject_name(_name("kube-apiserver")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + _VALIDITY)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


def generate_serving_certs(directory: str | None = None) -> ServingCerts:
    """Create a CA and a server certificate for 127.0.0.1 and write them to `directory` (or a new temp dir).

    The key files are private to this process's user. Nothing is reused between calls.
    """
    folder = Path(directory or tempfile.mkdtemp(prefix="sandbox-kube-tls-"))
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _ca()
    cert, key = _server(ca, ca_key)
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    paths = {"cert": folder / "apiserver.crt", "key": folder / "apiserver.key", "ca": folder / "ca.crt"}
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM) + ca_pem)
    paths["key"].touch(mode=0o600)
    paths["key"].write_bytes(_pem_key(key))
    paths["ca"].write_bytes(ca_pem)
    return ServingCerts(ca_pem=ca_pem.decode(), cert_file=str(paths["cert"]), key_file=str(paths["key"]),
                        ca_file=str(paths["ca"]), directory=str(folder))
