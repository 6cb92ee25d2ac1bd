"""Keylime's own checks on the files `cargo xtask bench` measures Vouch on, timed the same way.

Run by `cargo xtask bench --compare keylime` with the Keylime virtualenv's interpreter:
    keylime-compare.py QUOTES_DIR EVENT_LOG
Prints one JSON object: the median time of each check in microseconds, over repeated runs.
- quote_check/ecdsa_p256, quote_check/rsa2048: keylime.tpm.tpm_util.checkquote (signature,
  nonce, PCR digest), with the AK as Keylime holds it (PEM, converted once, outside the timing).
- eventlog_parse_112_events: keylime.mba.elparsing.tpm2_tools_elparser.parse_binary_bootlog
  (Keylime runs `tpm2_eventlog`, loads its YAML and enriches it), the measured-boot log parse
  of Keylime's verifier.
"""

import json
import statistics
import sys
import time

from cryptography.hazmat.primitives import serialization
from keylime.mba.elparsing import tpm2_tools_elparser
from keylime.tpm import tpm2_objects, tpm_util

NONCE = bytes([0x5E, 0xED])


def median_us(f, runs, warmup=3):
    for _ in range(warmup):
        f()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        f()
        samples.append((time.perf_counter() - start) * 1e6)
    return statistics.median(samples)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def main():
    quotes, log_path = sys.argv[1], sys.argv[2]
    out = {}
    for label, name in (("ecdsa_p256", "gce-ecc256"), ("rsa2048", "gce-rsa2048")):
        ak_pem = tpm2_objects.pubkey_from_tpm2b_public(read(f"{quotes}/{name}.ak.pub")).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        quote = read(f"{quotes}/{name}.quote")
        sig = read(f"{quotes}/{name}.sig")
        pcrs = read(f"{quotes}/{name}.pcrs")
        check = lambda: tpm_util.checkquote(ak_pem, NONCE, sig, quote, pcrs, "sha256")
        if not check():
            raise SystemExit(f"keylime refused {name}")
        out[f"quote_check/{label}"] = median_us(check, 2000)
    log = read(log_path)
    failure, parsed = tpm2_tools_elparser.parse_binary_bootlog(log)
    if failure or not parsed or len(parsed.get("events", [])) != 112:
        raise SystemExit(f"keylime did not parse the event log: {failure}")
    out["eventlog_parse_112_events"] = median_us(lambda: tpm2_tools_elparser.parse_binary_bootlog(log), 60)
    print(json.dumps(out))


main()
