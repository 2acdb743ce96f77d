"""Verifies a compact JWS against a JWKS with a standard JOSE library
(jwcrypto), outside Rust. Usage: verify_jws.py JWKS_FILE JWS_FILE [--check-time].
Prints the payload and exits 0 when the signature verifies; exits 1 when
it does not. With --check-time the token is also read as a JWT whose
`exp` and `nbf` must hold at this moment, with no leeway."""
import json
import sys

from jwcrypto import jwk, jws, jwt


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as f:
        keys = jwk.JWKSet.from_json(f.read())
    with open(sys.argv[2], encoding="utf-8") as f:
        token = f.read().strip()
    check_time = "--check-time" in sys.argv[3:]
    signed = jws.JWS()
    try:
        signed.deserialize(token)
        header = signed.jose_header
        if header.get("alg") != "ES256" or "kid" not in header:
            print("unexpected header", header, file=sys.stderr)
            return 1
        key = keys.get_key(header["kid"])
        if key is None:
            print("no key", header["kid"], file=sys.stderr)
            return 1
        signed.verify(key, alg="ES256")
        if check_time:
            # Raises JWTExpired / JWTNotYetValid outside [nbf, exp).
            t = jwt.JWT(algs=["ES256"], check_claims={"exp": None, "nbf": None})
            t.leeway = 0
            t.deserialize(token, key)
    except Exception as e:  # noqa: BLE001 - any failure is a failed verification
        print(f"verification failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(json.loads(signed.payload)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
