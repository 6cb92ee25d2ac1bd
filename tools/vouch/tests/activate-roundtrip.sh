#!/bin/bash
# Round trip of `vouch credential make` through a real TPM 2.0 (swtpm):
# the TPM's TPM2_ActivateCredential must recover the secret, for RSA and ECC
# EKs and RSA and ECC AKs. Needs swtpm and tpm2-tools; run by hand or from
# hil-tests: tools/vouch/tests/activate-roundtrip.sh path/to/vouch
set -euo pipefail
VOUCH=${1:-vouch}
P=${PORT:-23351}
T=$(mktemp -d)
swtpm socket --tpm2 --server type=tcp,port=$P --ctrl type=tcp,port=$((P+1)) --tpmstate dir=$T --flags startup-clear &
SW=$!
trap 'kill $SW; rm -rf $T' EXIT
sleep 1
export TPM2TOOLS_TCTI=swtpm:port=$P
cd $T
SECRET=0123456789abcdef0123456789abcdef
fail=0
for ek in rsa ecc; do
  for ak in ecc256:ecdsa rsa2048:rsassa; do
    tpm2_createek -c ek.ctx -G $ek -u ek.pub >/dev/null; tpm2_flushcontext -t
    tpm2_createak -C ek.ctx -c ak.ctx -G ${ak%%:*} -s ${ak##*:} -g sha256 -u ak.pub >/dev/null; tpm2_flushcontext -t
    "$VOUCH" credential make --ek-public ek.pub --ak-public ak.pub --secret $SECRET -o cred.bin
    tpm2_startauthsession --policy-session -S s.ctx >/dev/null
    tpm2_policysecret -S s.ctx -c e >/dev/null
    tpm2_activatecredential -c ak.ctx -C ek.ctx -i cred.bin -o out.bin -P"session:s.ctx" >/dev/null
    tpm2_flushcontext s.ctx; tpm2_flushcontext -t
    got=$(xxd -p out.bin | tr -d '\n')
    if [ "$got" = "$SECRET" ]; then echo "ok   EK=$ek AK=$ak"; else echo "FAIL EK=$ek AK=$ak: $got"; fail=1; fi
  done
done
exit $fail
