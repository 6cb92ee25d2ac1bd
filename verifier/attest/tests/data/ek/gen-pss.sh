#!/bin/bash
# An RSA-PSS (SHA-256, salt 32) signed CA and EK certificate, made with openssl.
set -euo pipefail
T=$(mktemp -d); trap 'rm -rf $T' EXIT
openssl req -x509 -newkey rsa:2048 -keyout $T/root.key -nodes -subj /CN=pss-root \
  -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32 -sha256 -days 36500 \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign -out pss-root.pem 2>/dev/null
openssl req -new -newkey rsa:2048 -nodes -keyout $T/ek.key -subj /CN=pss-ek -out $T/ek.csr 2>/dev/null
printf 'extendedKeyUsage=2.23.133.8.1\nkeyUsage=critical,keyEncipherment\nbasicConstraints=critical,CA:FALSE\n' > $T/ext
openssl x509 -req -in $T/ek.csr -CA pss-root.pem -CAkey $T/root.key -set_serial 2 -days 36500 \
  -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32 -sha256 -extfile $T/ext -outform der -out pss-ek.der 2>/dev/null
