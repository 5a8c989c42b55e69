#!/bin/sh
# Installs the pinned stack into /opt/venv. Runs in the `stack` stage of docker/Dockerfile only,
# so the build-time settings it uses (the extra CA bundle, the pip index) never reach the final
# image: that copies /opt/venv and nothing else from the stage.
#
# Inputs (build arguments, all optional):
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_TRUSTED_HOST  pip's own settings
#   TENSORFLOW_EXTRAS  extras of the tensorflow requirement, e.g. and-cuda for the GPU image
# Files:
#   /tmp/stack/setup.cfg        install_requires and the ray extra: the direct pins (one source
#                               of truth)
#   /tmp/stack/constraints.txt  every transitive version
#   /tmp/stack/certs/*.crt|pem  extra CA certificates (a TLS-intercepting proxy's)
set -eu

# An empty build argument is still set in the environment; pip must not see it as a setting.
for name in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST; do
  eval "value=\${$name:-}"
  if [ -z "$value" ]; then unset "$name"; fi
done

python3 -m venv /opt/venv
pip=/opt/venv/bin/pip

# pip trusts its own certifi bundle, not the system's: add the extra certificates to a copy.
extra=$(find /tmp/stack/certs -maxdepth 1 -type f \( -name '*.crt' -o -name '*.pem' \) | sort)
if [ -n "$extra" ]; then
  bundle=/tmp/stack/ca-bundle.pem
  /opt/venv/bin/python -c 'import pip._vendor.certifi as c; print(c.where())' \
    | xargs cat > "$bundle"
  for cert in $extra; do cat "$cert" >> "$bundle"; echo >> "$bundle"; done
  export PIP_CERT="$bundle"
  echo "install_stack: pip trusts $(echo "$extra" | wc -l) extra CA file(s)"
fi

/opt/venv/bin/python - "${TENSORFLOW_EXTRAS:-}" > /tmp/stack/requirements.txt <<'EOF'
import configparser
import sys

extras = sys.argv[1]
config = configparser.ConfigParser()
config.read('/tmp/stack/setup.cfg')
# The image serves compose, Ray and KubeRay alike: the `ray` extra is part of the stack.
lines = (config['options']['install_requires'].splitlines()
         + config['options.extras_require']['ray'].splitlines()
         + config['options.extras_require']['mujoco'].splitlines())
for line in lines:
  line = line.split('#')[0].strip()
  if not line:
    continue
  if extras and line.startswith('tensorflow=='):
    line = f'tensorflow[{extras}]==' + line.split('==', 1)[1]
  print(line)
EOF
echo "install_stack: requirements:"; sed 's/^/  /' /tmp/stack/requirements.txt

"$pip" install --no-cache-dir --disable-pip-version-check --progress-bar off \
  -r /tmp/stack/requirements.txt -c /tmp/stack/constraints.txt
"$pip" check
rm -rf /tmp/stack
