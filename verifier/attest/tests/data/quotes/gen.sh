#!/bin/bash
# Generates the quote fixtures in verifier/attest/tests/data against swtpm.
set -euo pipefail
P=${PORT:-23321}
D=$(mktemp -d)
swtpm socket --tpm2 --server type=tcp,port=$P --ctrl type=tcp,port=$((P+1)) --tpmstate dir=$D --flags startup-clear &
SW=$!
trap 'kill $SW; rm -rf $D' EXIT
sleep 1
export TPM2TOOLS_TCTI=swtpm:port=$P
# Some PCR state to quote.
for i in 0 1 2 3 4 7; do
  echo "measurement $i" > m.txt
  tpm2_pcrextend $i:sha256=$(sha256sum m.txt | cut -d' ' -f1),sha1=$(sha1sum m.txt | cut -d' ' -f1)
done
tpm2_createek -c ek.ctx -G rsa -u ek-rsa.pub >/dev/null
flush() { tpm2_flushcontext -t >/dev/null; tpm2_flushcontext -s >/dev/null; }
flush
quote() { # name alg scheme hash pcrlist
  local n=$1
  tpm2_createak -C ek.ctx -c ak.ctx -G $2 -g $4 -s $3 -u $n.ak.pub -n $n.ak.name -f tss >/dev/null
  flush
  tpm2_readpublic -c ak.ctx -f pem -o $n.ak.pem >/dev/null
  flush
  tpm2_quote -c ak.ctx -l $5 -q 0011223344556677 -m $n.quote -s $n.sig -o $n.pcrs -g $4 --scheme $3 >/dev/null
  # tpm2_checkquote 5.4 refuses TPM RSA-PSS signatures (it guesses a different salt length).
  [ $3 = rsapss ] || tpm2_checkquote -u $n.ak.pub -m $n.quote -s $n.sig -f $n.pcrs -q 0011223344556677 -g $4 >/dev/null
  flush
}
quote ecc256-sha256 ecc256 ecdsa sha256 sha256:0,1,2,3,4,7
quote ecc384-sha384 ecc384 ecdsa sha384 sha256:0,1,2,3,4,7+sha1:0,7
quote rsa2048-sha256 rsa2048 rsassa sha256 sha256:0,1,2,3,4,7
quote rsa2048-sha1 rsa2048 rsassa sha1 sha1:0,1,2,3,4,7
quote rsapss2048-sha256 rsa2048 rsapss sha256 sha1:0,1,2,3,4,5,6,7,8,9,10+sha256:0,1,2,3,4,5,6,7,8,9,10
# A second quote by the same AK, later in time.
tpm2_createak -C ek.ctx -c ak.ctx -G ecc256 -g sha256 -s ecdsa -u ecc256-seq.ak.pub -n ecc256-seq.ak.name -f tss >/dev/null
flush
tpm2_quote -c ak.ctx -l sha256:0 -q aa -m ecc256-seq1.quote -s ecc256-seq1.sig -o ecc256-seq1.pcrs -g sha256 >/dev/null
flush
tpm2_quote -c ak.ctx -l sha256:0 -q bb -m ecc256-seq2.quote -s ecc256-seq2.sig -o ecc256-seq2.pcrs -g sha256 >/dev/null
tpm2_pcrread -o pcrread-sha1-sha256.pcrs sha1:0,1,2,3,4,5,6,7,8,9,10+sha256:0,1,2,3,4,5,6,7,8,9,10 > pcrread-sha1-sha256.yaml
rm -f ek.ctx ak.ctx m.txt

# A TPM whose PCRs hold exactly the replay of a real 112-event firmware log
# (GCE, from the shared test data): each measured event is extended into a
# fresh swtpm, then quoted with an ECDSA P-256 and an RSA-2048 AK.
LOG=${LOG:-$(dirname "$0")/../../../../../testdata/eventlogs/tpm2-tools/event-gce-ubuntu-2104-log.bin}
kill $SW; sleep 1; rm -rf $D/*
swtpm socket --tpm2 --server type=tcp,port=$P --ctrl type=tcp,port=$((P+1)) --tpmstate dir=$D --flags startup-clear &
SW=$!
sleep 1
for ext in $(python3 "$(dirname "$0")"/extend-log.py $LOG); do tpm2_pcrextend $ext; done
tpm2_createek -c ek.ctx -G rsa >/dev/null
flush
for k in ecc256:ecdsa rsa2048:rsassa; do
  alg=${k%%:*}; sch=${k##*:}
  tpm2_createak -C ek.ctx -c ak.ctx -G $alg -g sha256 -s $sch -u gce-$alg.ak.pub -f tss >/dev/null
  flush
  tpm2_quote -c ak.ctx -l sha256:0,1,2,3,4,5,6,7,8,9 -q 5eed -m gce-$alg.quote -s gce-$alg.sig -o gce-$alg.pcrs -g sha256 --scheme $sch >/dev/null
  tpm2_checkquote -u gce-$alg.ak.pub -m gce-$alg.quote -s gce-$alg.sig -f gce-$alg.pcrs -q 5eed -g sha256 >/dev/null
  flush
done
rm -f ek.ctx ak.ctx
