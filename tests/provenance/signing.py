"""C2PA signing for tests: a certificate chain made at test time and c2pa-python's Builder.

:func:`make_chain` issues an ES256 root CA and a leaf with what c2pa accepts of a signer (not a
CA, digitalSignature key usage, the emailProtection extended key usage, subject and authority key
identifiers). :func:`sign` embeds a manifest whose ``c2pa.created`` action declares a digital
source type, as a generator does.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass

import c2pa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"


@dataclass(frozen=True)
class Chain:
    """A signer's PEM chain (leaf, then CA), its PEM private key, and the CA alone (the anchor)."""

    chain_pem: bytes
    key_pem: bytes
    anchor_pem: bytes


def _name(common_name: str, organization: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        ]
    )


def _usage(*, signer: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signer,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=not signer,
        crl_sign=not signer,
        encipher_only=False,
        decipher_only=False,
    )


def make_chain(common_name: str = "Test Generator", organization: str = "dfmod tests") -> Chain:
    """Returns a fresh root CA and leaf signer (ES256, valid from yesterday for 30 days)."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key, leaf_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca_name = _name(f"{organization} root CA", organization)

    def builder(subject: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        )

    ca = (
        builder(ca_name, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_usage(signer=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        builder(_name(common_name, organization), leaf_key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(signer=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = leaf_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Chain(leaf.public_bytes(pem) + ca.public_bytes(pem), key_pem, ca.public_bytes(pem))


def sign(
    data: bytes,
    mime: str,
    chain: Chain,
    *,
    source_type: str = "trainedAlgorithmicMedia",
    generator: str = "TestGen",
) -> bytes:
    """Returns ``data`` with an embedded C2PA manifest whose created action has ``source_type``."""
    manifest = {
        "claim_generator_info": [{"name": generator, "version": "1.0"}],
        "title": "test asset",
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {
                    "actions": [{"action": "c2pa.created", "digitalSourceType": IPTC + source_type}]
                },
            }
        ],
    }
    info = c2pa.C2paSignerInfo(
        alg=b"es256", sign_cert=chain.chain_pem, private_key=chain.key_pem, ta_url=None
    )
    out = io.BytesIO()
    with c2pa.Signer.from_info(info) as signer, c2pa.Builder(manifest) as builder:
        builder.sign(signer, mime, io.BytesIO(data), out)
    return out.getvalue()


def corrupt_manifest(signed: bytes) -> bytes:
    """Returns ``signed`` with one byte of the manifest's claim changed (the pixels untouched)."""
    at = signed.index(b"c2pa.actions")
    return signed[:at] + b"X" + signed[at + 1 :]
