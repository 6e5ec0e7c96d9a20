"""An independent IAM Roles Anywhere request signer (AWS4-X509-RSA-SHA256 / AWS4-X509-ECDSA-SHA256).

Written from the documented algorithm ("identical to SigV4" but for the key, the algorithm name
and the certificate headers), with the shared parts taken from botocore: the canonical request is
`botocore.auth.SigV4Auth.canonical_request` (service `rolesanywhere`), the signature is
`cryptography`'s RSA PKCS#1 v1.5 or ECDSA, both over SHA-256, DER, lower-case hex. None of
idbridge's code is involved, so a request signed here checks the emulator's verifier, and a vector
derived here checks idbridge's signer.
"""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

SERVICE = "rolesanywhere"


def b64_der(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def sign(cert: x509.Certificate, intermediates: list[x509.Certificate], key, region: str, url: str,
         query: dict[str, str], headers: dict[str, str], body: bytes, amz_date: str,
         algorithm: str | None = None) -> dict:
    """Returns {'headers': the headers to send, 'canonical_request', 'string_to_sign'}."""
    if algorithm is None:
        algorithm = "AWS4-X509-RSA-SHA256" if isinstance(key, rsa.RSAPrivateKey) else "AWS4-X509-ECDSA-SHA256"
    send = dict(headers)
    send["Host"] = urlsplit(url).netloc
    send["X-Amz-Date"] = amz_date
    send["X-Amz-X509"] = b64_der(cert)
    if intermediates:
        send["X-Amz-X509-Chain"] = ",".join(b64_der(c) for c in intermediates)
    request = AWSRequest(method="POST", url=url, params=query, data=body, headers=send)
    # Any credentials: only the canonicalisation of SigV4Auth is used, never its HMAC.
    botocore_auth = SigV4Auth(Credentials("unused", "unused"), SERVICE, region)
    canonical = botocore_auth.canonical_request(request)
    signed_headers = botocore_auth.signed_headers(botocore_auth.headers_to_sign(request))
    scope = f"{amz_date[:8]}/{region}/{SERVICE}/aws4_request"
    string_to_sign = "\n".join([algorithm, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(string_to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())
    else:
        signature = key.sign(string_to_sign.encode(), ec.ECDSA(hashes.SHA256()))
    send["Authorization"] = (f"{algorithm} Credential={cert.serial_number}/{scope}, "
                             f"SignedHeaders={signed_headers}, Signature={signature.hex()}")
    return {"headers": send, "canonical_request": canonical, "string_to_sign": string_to_sign}
