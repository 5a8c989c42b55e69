#!/bin/sh
# Installs the pinned stack into /opt/venv. Runs in the `stack` stage of docker/Dockerfile only,
# so the build-time settings it uses (the extra CA bundle, the pip index) never reach the final
# image: that copies /opt/venv and nothing else from the stage.
#
# Inputs (build arguments, all optional):
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_TRUSTED_HOST  pip's own settings
#   TENSORFLOW_EXTRAS  extras of the tensorflow requirement, e.g. and-cuda for the GPU image
# Files:
#   /tmp/stack/setup.cfg              install_requires and the extras: the direct pins
#   /tmp/stack/requirements.lock      every package of the image, each file's sha256 (lock.py)
#   /tmp/stack/requirements-cuda.lock the CUDA packages of the GPU image, hashed the same way
#   /tmp/stack/certs/*.crt|pem        extra CA certificates (a TLS-intercepting proxy's)
# Every file is checked against the lock's hashes (`--require-hashes`): a package whose content
# changed on the index, a mirror or the way fails the build.
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

# The direct pins of setup.cfg must be the lock's: a pin changed without a new lock fails here.
/opt/venv/bin/python - <<'EOF'
import configparser
import re

config = configparser.ConfigParser()
config.read('/tmp/stack/setup.cfg')
lines = (config['options']['install_requires'].splitlines()
         + config['options.extras_require']['ray'].splitlines()
         + config['options.extras_require']['mujoco'].splitlines())
normal = lambda name: re.sub(r'[-_.]+', '-', name).lower()
pin = re.compile(r'^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;\\]+)')
with open('/tmp/stack/requirements.lock') as f:
  locked = {normal(m.group(1)): m.group(2) for m in map(pin.match, f) if m}
for line in lines:
  m = pin.match(line.split('#')[0].strip())
  if m and locked.get(normal(m.group(1))) != m.group(2):
    raise SystemExit(f'install_stack: setup.cfg pins {m.group(1)}=={m.group(2)}, the lock '
                     f'{locked.get(normal(m.group(1)))}: run docker/lock.py --from_freeze')
EOF

cp /tmp/stack/requirements.lock /tmp/stack/requirements.txt
if [ -n "${TENSORFLOW_EXTRAS:-}" ]; then
  if [ "$TENSORFLOW_EXTRAS" != "and-cuda" ]; then
    echo "install_stack: TENSORFLOW_EXTRAS=$TENSORFLOW_EXTRAS has no lock; use and-cuda" >&2
    exit 2
  fi
  cat /tmp/stack/requirements-cuda.lock >> /tmp/stack/requirements.txt
fi
echo "install_stack: $(grep -c '==' /tmp/stack/requirements.txt) packages, every file hashed"

# --no-deps: the lock is the whole tree (pip check below proves it); pip resolves nothing.
"$pip" install --no-cache-dir --disable-pip-version-check --progress-bar off \
  --require-hashes --no-deps -r /tmp/stack/requirements.txt
"$pip" check
rm -rf /tmp/stack
