//! Pure attestation decisions (no I/O, no clock).
