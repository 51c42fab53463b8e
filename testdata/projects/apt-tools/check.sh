#!/bin/bash
# Exercise the tools the way a CI job would; every line of output is checked by the test.
set -euo pipefail
git init -q -b main repo
cd repo
printf 'a\nb\n' > file.txt
git add file.txt
git commit -q -m 'first'
printf 'a\nB\n' > file.txt
git diff > ../change.patch
git checkout -q file.txt
patch -s -p1 < ../change.patch
echo "git: $(git rev-list --count HEAD) commit, file now $(tr '\n' ' ' < file.txt)"
printf '{"tools":["git","jq","curl"],"n":3}' | jq -r '"jq: " + (.tools | join(","))'
zip -q -r ../repo.zip file.txt && unzip -p ../repo.zip file.txt | tr '\n' ' ' | sed 's/^/zip: /;s/ $/\n/'
printf 'all:\n\t@echo make: ok\n' > Makefile && make -s
echo "xz: $(echo hello | xz | xz -dc)"
echo "file: $(file -b --mime-type ../repo.zip)"
# HTTPS through the proxy with the CA installed in the image.
echo "curl: $(curl -sS -o /dev/null -w '%{http_code}' https://pypi.org/simple/pip/)"
echo "ssh: $(ssh -V 2>&1 | cut -d_ -f1)"
