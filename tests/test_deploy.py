"""Deployment files, checked offline: the pinned stack installs together, and the KubeRay
manifest is valid Kubernetes with the placement and the network policy that docs/kubernetes.md
describes."""

import configparser
import importlib.metadata
import os
import re
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

from tests.conftest import REPO

MANIFEST = os.path.join(REPO, 'deploy', 'kubernetes', 'raycluster.yaml')
K8S_VERSION = '1.30.0'
_PIN = re.compile(r'^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;#]+)')


def _pins(*sections):
  config = configparser.ConfigParser()
  config.read(os.path.join(REPO, 'setup.cfg'))
  pins = {}
  for section, key in sections:
    for line in config[section][key].splitlines():
      match = _PIN.match(line.split('#')[0].strip())
      if match:
        pins[match.group(1)] = match.group(2)
  return pins


def _normal(name: str) -> str:
  return re.sub(r'[-_.]+', '-', name).lower()


def test_every_pin_is_what_is_installed_and_pip_finds_no_conflict():
  pins = _pins(('options', 'install_requires'), ('options.extras_require', 'ray'),
               ('options.extras_require', 'mujoco'), ('options.extras_require', 'test'))
  assert pins['ray'] == '2.60.0' and pins['tensorflow'] == '2.15.1'
  # Users' environments: the newest Gymnasium that tf-agents' typing-extensions pin admits.
  assert pins['gymnasium'] == '1.2.3' and pins['mujoco'] == '3.3.7'
  # The Atari stack: ROMs inside ale-py's wheel, and an OpenCV that keeps numpy 1.26.
  assert pins['ale-py'] == '0.10.1' and pins['opencv-python-headless'] == '4.11.0.86'
  wrong = {name: (version, importlib.metadata.version(name)) for name, version in pins.items()
           if importlib.metadata.version(name) != version}
  assert not wrong, f'installed versions differ from setup.cfg: {wrong}'
  check = subprocess.run([sys.executable, '-m', 'pip', 'check'], capture_output=True, text=True,
                         timeout=120, check=False)
  assert check.returncode == 0, check.stdout + check.stderr
  # Plain ray: the dashboard extra's pydantic would not resolve beside tf-agents 0.19.
  with pytest.raises(importlib.metadata.PackageNotFoundError):
    importlib.metadata.version('pydantic')


def _lock(name):
  with open(os.path.join(REPO, 'docker', name)) as f:
    text = f.read()
  return text, {_normal(m.group(1)): m.group(2) for line in text.splitlines()
                if (m := _PIN.match(line.strip()))}


def test_image_lock_agrees_with_setup_cfg():
  _, constraints = _lock('requirements.lock')
  pins = _pins(('options', 'install_requires'), ('options.extras_require', 'ray'),
               ('options.extras_require', 'mujoco'))
  disagree = {n: (v, constraints[_normal(n)]) for n, v in pins.items()
              if _normal(n) in constraints and constraints[_normal(n)] != v}
  assert not disagree
  missing = sorted(n for n in pins if _normal(n) not in constraints)
  assert not missing, f'pinned in setup.cfg but not in docker/requirements.lock: {missing}'
  assert constraints['ray'] == '2.60.0'


def test_every_locked_package_has_a_hash_for_each_of_its_files():
  for name in ('requirements.lock', 'requirements-cuda.lock'):
    text, pins = _lock(name)
    entries = re.split(r'\n(?=[A-Za-z0-9])', text.split('\n\n', 1)[1].strip())
    assert len(entries) == len(pins) > 0, name
    for entry in entries:
      assert re.search(r'--hash=sha256:[0-9a-f]{64}', entry), entry[:200]
      assert all(re.fullmatch(r'[0-9a-f]{64}', h)
                 for h in re.findall(r'--hash=sha256:(\S+?)(?: \\)?$', entry, re.M)), entry
  # The GPU image's CUDA packages are TensorFlow's own pins for its and-cuda extra.
  _, cuda = _lock('requirements-cuda.lock')
  requires = importlib.metadata.requires('tensorflow')
  expected = {_normal(m.group(1)): m.group(2) for r in requires if "extra == 'and-cuda'" in r
              for m in [re.match(r'([\w.-]+) ?\(?==([\w.]+)', r)] if m}
  assert cuda == expected and len(cuda) == 12
  # The image installs from the lock with hash checking on.
  with open(os.path.join(REPO, 'docker', 'install_stack.sh')) as f:
    script = f.read()
  assert '--require-hashes --no-deps -r /tmp/stack/requirements.txt' in script


def _documents():
  with open(MANIFEST) as f:
    return [d for d in yaml.safe_load_all(f) if d]


def _pod_templates(raycluster):
  spec = raycluster['spec']
  yield 'head', spec['headGroupSpec']
  for group in spec['workerGroupSpecs']:
    yield group['groupName'], group


def test_manifest_validates_against_the_kubernetes_schemas():
  documents = _documents()
  kinds = [d['kind'] for d in documents]
  assert kinds == ['Namespace', 'RayCluster', 'NetworkPolicy']
  for document in documents:
    if document['apiVersion'].startswith('ray.io/'):
      continue  # A custom resource: its pod templates are validated below.
    kubernetes_validate.validate(document, K8S_VERSION, strict=True)
  raycluster = documents[1]
  for name, group in _pod_templates(raycluster):
    template = dict(apiVersion='v1', kind='PodTemplate',
                    metadata=dict(name=f'reverb-fleet-{name}', namespace='reverb-fleet'),
                    template=group['template'])
    kubernetes_validate.validate(template, K8S_VERSION, strict=True)


def test_manifest_places_server_learner_and_actors_as_the_launcher_expects():
  raycluster = _documents()[1]
  assert raycluster['apiVersion'] == 'ray.io/v1'
  assert raycluster['spec']['rayVersion'] == _pins(('options.extras_require', 'ray'))['ray']
  groups = dict(_pod_templates(raycluster))
  assert 'reverb_server' in groups['head']['rayStartParams']['resources']
  learner, actors = groups['learner-gpu'], groups['actors-cpu']
  assert 'reverb_learner' in learner['rayStartParams']['resources']
  container = learner['template']['spec']['containers'][0]
  assert container['resources']['limits']['nvidia.com/gpu'] == '1'
  assert learner['rayStartParams']['num-gpus'] == '1'
  assert actors['rayStartParams']['num-gpus'] == '0'
  assert actors['maxReplicas'] >= actors['replicas'] >= actors['minReplicas'] >= 1
  # Only the CPU group offers the actors' resource: none lands on the head or the GPU pod.
  assert 'reverb_actor' in actors['rayStartParams']['resources']
  assert all('reverb_actor' not in g['rayStartParams'].get('resources', '')
             for name, g in groups.items() if name != 'actors-cpu')
  # The header's commands fit the pods: each actor and eval take one of a pod's CPUs.
  with open(MANIFEST) as f:
    header = f.read().split('apiVersion:')[0]
  slots = actors['replicas'] * int(actors['rayStartParams']['num-cpus'])
  first = re.search(r'cluster --address=auto .*--num_actors=(\d+)', header.replace('\\\n', ' '))
  assert first and int(first.group(1)) + 1 <= slots, (first, slots)
  patched = int(re.search(r'"value": (\d+)', header).group(1))
  scaled = int(re.search(r'scale --address=auto --num_actors=(\d+)', header).group(1))
  assert patched <= actors['maxReplicas']
  assert scaled + 1 <= patched * int(actors['rayStartParams']['num-cpus'])
  assert '--actor_resource=reverb_actor' in header
  if raycluster['spec'].get('enableInTreeAutoscaling') is False:
    assert 'autoscaler adds' not in header
  for name, group in groups.items():
    pod = group['template']['spec']
    assert pod['securityContext']['runAsNonRoot'] is True, name
    image = pod['containers'][0]['image']
    assert image.startswith('reverb-fleet:'), (name, image)
    assert any(m['mountPath'] == '/data' for m in pod['containers'][0]['volumeMounts'])


def test_network_policy_admits_only_the_fleets_own_pods():
  policy = _documents()[2]
  selector = {'ray.io/cluster': 'reverb-fleet'}
  assert policy['spec']['podSelector']['matchLabels'] == selector
  assert policy['spec']['policyTypes'] == ['Ingress', 'Egress']
  sources = [peer for rule in policy['spec']['ingress'] for peer in rule['from']]
  assert sources == [{'podSelector': {'matchLabels': selector}}]
  assert policy['metadata']['namespace'] == _documents()[1]['metadata']['namespace']


def test_network_policy_lets_the_fleet_reach_only_itself_and_dns():
  # No ipBlock: the metadata endpoint (169.254.169.254) and the Internet are out of reach.
  egress = _documents()[2]['spec']['egress']
  peers = [peer for rule in egress for peer in rule['to']]
  assert all('ipBlock' not in peer for peer in peers), peers
  assert {'podSelector': {'matchLabels': {'ray.io/cluster': 'reverb-fleet'}}} in peers
  dns = [rule for rule in egress if any('namespaceSelector' in p for p in rule['to'])]
  assert len(dns) == 1
  assert dns[0]['to'][0]['podSelector'] == {'matchLabels': {'k8s-app': 'kube-dns'}}
  assert sorted((p['protocol'], p['port']) for p in dns[0]['ports']) == [('TCP', 53),
                                                                          ('UDP', 53)]


def test_every_pod_is_hardened_for_the_restricted_pod_security_profile():
  namespace = _documents()[0]
  assert namespace['metadata']['labels']['pod-security.kubernetes.io/enforce'] == 'restricted'
  for name, group in _pod_templates(_documents()[1]):
    pod = group['template']['spec']
    assert pod['automountServiceAccountToken'] is False, name
    assert pod['securityContext']['runAsNonRoot'] is True, name
    assert pod['securityContext']['seccompProfile'] == {'type': 'RuntimeDefault'}, name
    volumes = {v['name']: v for v in pod['volumes']}
    for container in pod['containers']:
      context = container['securityContext']
      assert context['allowPrivilegeEscalation'] is False, name
      assert context['capabilities']['drop'] == ['ALL'], name
      assert context['readOnlyRootFilesystem'] is True, name
      # Where Ray and the roles write, with the root filesystem read-only.
      mounts = {m['mountPath']: m['name'] for m in container['volumeMounts']}
      for path in ('/tmp', '/data', '/home/fleet'):
        assert 'emptyDir' in volumes[mounts[path]], (name, path)
      image = container['image']
      assert ':' in image and not image.endswith(':latest'), (name, image)


def test_every_pod_presents_ray_token_from_a_secret_the_manifest_does_not_hold():
  with open(MANIFEST) as f:
    header = f.read().split('apiVersion:')[0]
  secret = re.search(r'create secret generic (\S+) \\\s*#\s*--from-literal=auth_token=', header)
  assert secret, header
  for name, group in _pod_templates(_documents()[1]):
    for container in group['template']['spec']['containers']:
      env = {e['name']: e for e in container['env']}
      assert env['RAY_AUTH_MODE']['value'] == 'token', name
      ref = env['RAY_AUTH_TOKEN']['valueFrom']['secretKeyRef']
      assert ref == {'name': secret.group(1), 'key': 'auth_token'}, name  # Not optional.
      assert 'value' not in env['RAY_AUTH_TOKEN'], name


def test_the_launch_command_on_the_head_gets_the_weights_key_from_a_secret():
  # The launch command (kubectl exec on the head) hands the key to the learner, actors and eval.
  with open(MANIFEST) as f:
    header = f.read().split('apiVersion:')[0]
  secret = re.search(r'create secret generic (\S+) \\\s*#\s*--from-literal=key=', header)
  assert secret, header
  head = _documents()[1]['spec']['headGroupSpec']['template']['spec']['containers'][0]
  env = {e['name']: e for e in head['env']}
  assert env['REVERB_FLEET_WEIGHTS_KEY']['valueFrom']['secretKeyRef'] == {
      'name': secret.group(1), 'key': 'key'}
  assert 'value' not in env['REVERB_FLEET_WEIGHTS_KEY']


def test_compose_services_are_hardened_and_the_fleet_network_is_internal():
  with open(os.path.join(REPO, 'docker-compose.yml')) as f:
    compose = yaml.safe_load(f)
  assert compose['networks']['fleet'] == {'internal': True}
  for name, service in compose['services'].items():
    assert service['security_opt'] == ['no-new-privileges:true'], name
    assert service['cap_drop'] == ['ALL'], name
    assert service['read_only'] is True, name
    assert {'/tmp', '/home/fleet'} <= set(service['tmpfs']), name
    for limit in ('mem_limit', 'cpus', 'pids_limit'):
      assert limit in service, (name, limit)
    assert service['logging']['options']['max-size'], name
    expected = ['published'] if name == 'tensorboard' else ['fleet']
    assert service['networks'] == expected, name
    if name != 'tensorboard':
      assert 'ports' not in service, name  # Only TensorBoard is published (on 127.0.0.1).
  assert compose['services']['tensorboard']['ports'] == [
      '127.0.0.1:${TENSORBOARD_PORT:-6006}:6006']
  eval_volumes = compose['services']['eval']['volumes']
  assert not any(v.startswith('run:') for v in eval_volumes), eval_volumes
  for name in ('actor', 'eval'):
    assert 'keys:/data/keys:ro' in compose['services'][name]['volumes'], name
  assert 'keys:/data/keys' in compose['services']['learner']['volumes']
