"""Interoperability: an independent OAuth client (PyJWT + cryptography + requests) gets Warden
tokens with private_key_jwt and with DPoP, and verifies them against /oauth2/jwks.

Usage: interop.py keygen OUT_PRIVATE_PEM OUT_PUBLIC_JWK
       interop.py run BASE_URL CLIENT_ID PRIVATE_PEM AUDIENCE
Prints one JSON line of findings; exits non-zero on any failure."""

import base64
import hashlib
import json
import sys
import time
import uuid

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def b64(n: int, size: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes(size, "big")).rstrip(b"=").decode()


def public_jwk(key) -> dict:
    nums = key.public_key().public_numbers()
    return {"kty": "EC", "crv": "P-256", "x": b64(nums.x, 32), "y": b64(nums.y, 32)}


def thumbprint(jwk: dict) -> str:
    canonical = json.dumps(
        {"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"], "y": jwk["y"]},
        separators=(",", ":"), sort_keys=True,
    )
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def keygen(private_path: str, public_path: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with open(private_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(public_path, "w") as f:
        json.dump(public_jwk(key), f)


def run(base: str, client_id: str, private_path: str, audience: str) -> None:
    with open(private_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    meta = requests.get(f"{base}/.well-known/oauth-authorization-server", timeout=10).json()
    token_endpoint, issuer = meta["token_endpoint"], meta["issuer"]

    def assertion() -> str:
        now = int(time.time())
        return jwt.encode({"iss": client_id, "sub": client_id, "aud": token_endpoint,
                           "iat": now, "exp": now + 60, "jti": str(uuid.uuid4())},
                          key, algorithm="ES256")

    def dpop_proof() -> str:
        return jwt.encode({"jti": str(uuid.uuid4()), "htm": "POST", "htu": token_endpoint,
                           "iat": int(time.time())},
                          key, algorithm="ES256",
                          headers={"typ": "dpop+jwt", "jwk": public_jwk(key)})

    form = {"grant_type": "client_credentials", "client_id": client_id,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "scope": "ledger:write"}
    jwks = jwt.PyJWKClient(meta["jwks_uri"])
    out = {}
    for mode in ("private_key_jwt", "dpop"):
        headers = {"DPoP": dpop_proof()} if mode == "dpop" else {}
        r = requests.post(token_endpoint, data={**form, "client_assertion": assertion()},
                          headers=headers, timeout=10)
        assert r.status_code == 200, (mode, r.status_code, r.text)
        body = r.json()
        assert r.headers.get("Cache-Control") == "no-store", r.headers
        token = body["access_token"]
        header = jwt.get_unverified_header(token)
        assert header["typ"] == "at+jwt", header
        signing_key = jwks.get_signing_key_from_jwt(token)
        claims = jwt.decode(token, signing_key.key, algorithms=["EdDSA", "ES256"],
                            audience=audience, issuer=issuer,
                            options={"require": ["exp", "iat", "sub", "jti", "aud", "iss"]})
        assert claims["client_id"] == client_id and claims["sub"] == client_id, claims
        assert claims["scope"] == "ledger:write", claims
        if mode == "dpop":
            assert body["token_type"] == "DPoP", body
            assert claims["cnf"]["jkt"] == thumbprint(public_jwk(key)), claims
        else:
            assert body["token_type"] == "Bearer", body
            assert "cnf" not in claims, claims
        # A token whose signature was tampered with does not verify.
        bad = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        try:
            jwt.decode(bad, signing_key.key, algorithms=["EdDSA", "ES256"], audience=audience)
            raise AssertionError("a tampered token verified")
        except jwt.InvalidSignatureError:
            pass
        out[mode] = {"token_type": body["token_type"], "alg": header["alg"],
                     "expires_in": body["expires_in"]}
    # Replaying an assertion is refused.
    a = assertion()
    first = requests.post(token_endpoint, data={**form, "client_assertion": a},
                          headers={"DPoP": dpop_proof()}, timeout=10)
    again = requests.post(token_endpoint, data={**form, "client_assertion": a},
                          headers={"DPoP": dpop_proof()}, timeout=10)
    assert first.status_code == 200 and again.status_code == 401, (first.text, again.text)
    assert again.json()["error"] == "invalid_client", again.text
    out["replay"] = again.json()["error"]
    print(json.dumps(out))


if __name__ == "__main__":
    if sys.argv[1] == "keygen":
        keygen(sys.argv[2], sys.argv[3])
    else:
        run(*sys.argv[2:6])
