"""Verifies a webhook delivery as a receiver would, with a standard JOSE
library (jwcrypto): the detached ES256 JWS of the `Licensing-Signature`
header over the body exactly as received, against the sender's JWKS.
Usage: verify_webhook.py JWKS_FILE BODY_FILE SIGNATURE ENDPOINT. Prints
the body's delivery id and exits 0 when it verifies and is addressed to
ENDPOINT (`api-key:<key id>`); exits 1 when not."""
import json
import sys

from jwcrypto import jwk, jws


def verify(jwks_json: str, body: bytes, signature: str, endpoint: str) -> dict:
    """The README's receiver: raises unless `signature` signs `body` and the
    delivery is addressed to `endpoint` (a delivery to another endpoint,
    replayed here, verifies too)."""
    keys = jwk.JWKSet.from_json(jwks_json)
    token = jws.JWS()
    token.deserialize(signature)
    header = token.jose_header
    if header.get("alg") != "ES256" or header.get("typ") != "webhook+jws":
        raise ValueError(f"unexpected header {header}")
    token.verify(keys.get_key(header["kid"]), alg="ES256", detached_payload=body)
    delivery = json.loads(body)
    if delivery.get("endpoint") != endpoint:
        raise ValueError(f"addressed to {delivery.get('endpoint')!r}, not {endpoint!r}")
    return delivery


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as f:
        jwks_json = f.read()
    with open(sys.argv[2], "rb") as f:
        body = f.read()
    try:
        delivery = verify(jwks_json, body, sys.argv[3], sys.argv[4])
    except Exception as e:  # noqa: BLE001 - any failure is a failed verification
        print(f"verification failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(delivery["delivery_id"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
