"""Key pairs for the asymmetric schemes, generated per session (no private key in the repo)."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@pytest.fixture(scope="session")
def ecdsa_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def ed25519_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def sendgrid_public(key: ec.EllipticCurvePrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def discord_public(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw.hex()


@pytest.fixture(scope="session")
def request_keys(ecdsa_key: ec.EllipticCurvePrivateKey, ed25519_key: Ed25519PrivateKey) -> dict:
    return {"sendgrid": sendgrid_public(ecdsa_key), "discord": discord_public(ed25519_key)}
