"""Mutual TLS (RFC 8705) against Warden with an independent client (requests + cryptography).

Usage: mtls.py certs DIR          -> writes ca.pem, server.pem/.key, a (CA-issued, SAN
                                     spiffe://example.org/billing), c (CA-issued, other SAN),
                                     b (self-signed Ed25519) .pem/.key, b.pub.jwk
       mtls.py run DIR BASE SELF_SIGNED_CLIENT_ID PKI_CLIENT_ID
Prints one JSON line; exits non-zero on any failure."""

import base64
import datetime
import hashlib
import ipaddress
import json
import sys

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

NOW = datetime.datetime.now(datetime.timezone.utc)


def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def cert(subject_cn, key, issuer_cert, issuer_key, sans=(), ca=False):
    b = (x509.CertificateBuilder().subject_name(name(subject_cn))
         .issuer_name(issuer_cert.subject if issuer_cert else name(subject_cn))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(NOW - datetime.timedelta(minutes=5))
         .not_valid_after(NOW + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    algo = None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return b.sign(issuer_key, algo)


def write(d, stem, c, k):
    with open(f"{d}/{stem}.pem", "wb") as f:
        f.write(c.public_bytes(serialization.Encoding.PEM))
    with open(f"{d}/{stem}.key", "wb") as f:
        f.write(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()))


def certs(d):
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = cert("warden test CA", ca_key, None, ca_key, ca=True)
    with open(f"{d}/ca.pem", "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    sk = ec.generate_private_key(ec.SECP256R1())
    write(d, "server", cert("warden", sk, ca, ca_key,
                            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), sk)
    for stem, uri in (("a", "spiffe://example.org/billing"), ("c", "spiffe://example.org/other")):
        k = ec.generate_private_key(ec.SECP256R1())
        write(d, stem, cert(stem, k, ca, ca_key, [x509.UniformResourceIdentifier(uri)]), k)
    bk = ed25519.Ed25519PrivateKey.generate()
    write(d, "b", cert("self-signed client", bk, None, bk), bk)
    raw = bk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    with open(f"{d}/b.pub.jwk", "w") as f:
        json.dump({"kty": "OKP", "crv": "Ed25519",
                   "x": base64.urlsafe_b64encode(raw).rstrip(b"=").decode()}, f)


def x5t(d, stem):
    with open(f"{d}/{stem}.pem", "rb") as f:
        der = x509.load_pem_x509_certificate(f.read()).public_bytes(serialization.Encoding.DER)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def claims(token):
    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def run(d, base, self_signed_id, pki_id):
    ca = f"{d}/ca.pem"
    crt = lambda stem: (f"{d}/{stem}.pem", f"{d}/{stem}.key")
    token_url = f"{base}/oauth2/token"

    def token(client_id, stem):
        return requests.post(token_url, data={"grant_type": "client_credentials", "client_id": client_id},
                             cert=crt(stem) if stem else None, verify=ca, timeout=10)

    meta = requests.get(f"{base}/.well-known/oauth-authorization-server", verify=ca, timeout=10).json()
    assert "self_signed_tls_client_auth" in meta["token_endpoint_auth_methods_supported"], meta
    assert meta["tls_client_certificate_bound_access_tokens"] is True, meta
    out = {}
    # self_signed_tls_client_auth: the certificate holds the registered key.
    r = token(self_signed_id, "b")
    assert r.status_code == 200, r.text
    assert r.json()["token_type"] == "Bearer", r.text
    assert claims(r.json()["access_token"])["cnf"]["x5t#S256"] == x5t(d, "b")
    out["self_signed"] = "ok"
    # tls_client_auth: issued by the client CA with the identity's SAN.
    r = token(pki_id, "a")
    assert r.status_code == 200, r.text
    tok = r.json()["access_token"]
    assert claims(tok)["cnf"]["x5t#S256"] == x5t(d, "a")
    out["pki"] = "ok"
    # Refusals: a CA-issued certificate with another SAN; a CA certificate for the self-signed
    # client (its key is not registered); no certificate at all.
    for cid, stem, why in ((pki_id, "c", "other SAN"), (self_signed_id, "a", "unregistered key"),
                           (pki_id, None, "no certificate")):
        r = token(cid, stem)
        assert r.status_code in (400, 401), (why, r.status_code, r.text)
        out[why] = r.json()["error"]
    # The certificate-bound token works only over a connection with that certificate.
    who = lambda stem: requests.get(f"{base}/v1/whoami", headers={"Authorization": f"Bearer {tok}"},
                                    cert=crt(stem) if stem else None, verify=ca, timeout=10)
    assert who("a").status_code == 200, who("a").text
    assert who("c").status_code == 401, "another certificate"
    assert who(None).status_code == 401, "no certificate"
    out["bound"] = "ok"
    # Introspection, the resource server authenticating with its own certificate.
    r = requests.post(f"{base}/oauth2/introspect", data={"token": tok, "client_id": pki_id},
                      cert=crt("a"), verify=ca, timeout=10)
    assert r.status_code == 200 and r.json()["active"] is True, r.text
    assert r.json()["cnf"]["x5t#S256"] == x5t(d, "a"), r.text
    out["introspect"] = "ok"
    print(json.dumps(out))


if __name__ == "__main__":
    if sys.argv[1] == "certs":
        certs(sys.argv[2])
    else:
        run(*sys.argv[2:6])
