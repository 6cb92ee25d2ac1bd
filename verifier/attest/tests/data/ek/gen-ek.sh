#!/bin/bash
# Makes an swtpm "manufactured" TPM: swtpm_localca creates a root CA and an
# intermediate (issuer) CA, and swtpm_setup writes an RSA-2048 and an ECC
# P-384 EK certificate into the TPM's NV. Hermetic: every path is in a temp dir.
set -euo pipefail
OUT=$(pwd)
T=$(mktemp -d)
trap 'rm -rf $T' EXIT
mkdir -p $T/ca $T/state
cat > $T/swtpm-localca.conf <<EOC
statedir = $T/ca
signingkey = $T/ca/signkey.pem
issuercert = $T/ca/issuercert.pem
certserial = $T/ca/certserial
EOC
cat > $T/swtpm_setup.conf <<EOC
create_certs_tool = /usr/bin/swtpm_localca
create_certs_tool_config = $T/swtpm-localca.conf
active_pcr_banks = sha256
EOC
swtpm_setup --tpm2 --tpmstate $T/state --config $T/swtpm_setup.conf \
  --create-ek-cert --write-ek-cert-files $T/state >/dev/null
cp $T/state/ek-rsa2048.crt $T/state/ek-secp384r1.crt $OUT/
cp $T/ca/issuercert.pem $OUT/swtpm-localca-issuer.pem
cp $T/ca/swtpm-localca-rootca-cert.pem $OUT/swtpm-localca-root.pem
# The EK public areas: swtpm_setup made the EKs persistent (RSA at
# 0x81010001, ECC P-384 at 0x81010016). `tpm2_createek -G ecc` instead
# derives the default P-256 EK, which is not a certified key.
P=${PORT:-23331}
swtpm socket --tpm2 --server type=tcp,port=$P --ctrl type=tcp,port=$((P+1)) --tpmstate dir=$T/state --flags startup-clear &
SW=$!
sleep 1
export TPM2TOOLS_TCTI=swtpm:port=$P
tpm2_readpublic -c 0x81010001 -o $OUT/ek-rsa2048.pub >/dev/null
tpm2_readpublic -c 0x81010016 -o $OUT/ek-secp384r1.pub >/dev/null
tpm2_createek -c $T/ek.ctx -G ecc -u $OUT/ek-ecc256-not-the-certified-key.pub >/dev/null
kill $SW; wait $SW 2>/dev/null || true
