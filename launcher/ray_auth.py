"""Ray's token authentication, required of every cluster a fleet runs on.

Whoever reaches a Ray cluster's ports without authentication runs code on every node of it.
Ray 2.60 (its `ray/_private/authentication/authentication_token_setup.py`) turns token
authentication on by itself only for a throwaway cluster that `ray.init()` starts; `ray start`
runs an open cluster unless `RAY_AUTH_MODE=token` is set on every node, or a token already
exists in the node's `~/.ray/auth_token`. So the launcher does not take the cluster's word for
it: before it sends anything, it calls the cluster's GCS once without a token
(`gcs_requires_token`), and refuses a cluster that answers. A cluster that demands a token gets
this command's, which must then be set (`client_token`).

What a user does, on every node and wherever the launch command runs (docs/ray.md,
"Authentication"):

  ray get-auth-token --generate > /dev/null      # once; writes ~/.ray/auth_token
  export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=~/.ray/auth_token   # the same file everywhere
"""

import os
from typing import Optional, Tuple

import grpc

from common.errors import UserError

TOKEN_STEPS = ('make a token with `ray get-auth-token --generate`, copy ~/.ray/auth_token to '
               'every node and to this machine, and start every node and this command with '
               'RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=<that file> (docs/ray.md, '
               '"Authentication")')

# A GCS call that needs no arguments (an empty request) and changes nothing.
_GCS_PROBE = '/ray.rpc.NodeInfoGcsService/GetClusterId'


def _gcs_accepts(address: str, token: Optional[str], timeout_s: float) -> bool:
  """Whether the Ray GCS at host:port answers a call that carries `token` (None: no token).

  Raises:
    ConnectionError: it answered neither yes nor no (UNAUTHENTICATED) within `timeout_s`.
  """
  metadata = [('authorization', f'Bearer {token}')] if token is not None else None
  with grpc.insecure_channel(address,
                             options=[('grpc.use_local_subchannel_pool', 1)]) as channel:
    call = channel.unary_unary(_GCS_PROBE, request_serializer=lambda x: x,
                               response_deserializer=lambda x: x)
    try:
      call(b'', timeout=timeout_s, metadata=metadata)
    except grpc.RpcError as e:
      if e.code() == grpc.StatusCode.UNAUTHENTICATED:
        return False
      raise ConnectionError(f'the Ray GCS at {address} answered {e.code().name}: '
                            f'{e.details()}') from None
  return True


def gcs_requires_token(address: str, timeout_s: float = 10.0) -> bool:
  """Whether the Ray GCS at host:port refuses a call that carries no token.

  Raises:
    ConnectionError: the GCS did not answer either way within `timeout_s`.
  """
  return not _gcs_accepts(address, None, timeout_s)


def client_token(environ=None) -> Tuple[Optional[str], str]:
  """(the token this process presents, or None; where it comes from, or what is missing).

  Ray reads `RAY_AUTH_MODE` and the token (`RAY_AUTH_TOKEN`, else the file
  `RAY_AUTH_TOKEN_PATH`, else `~/.ray/auth_token`) when it is imported; so does this.
  """
  environ = os.environ if environ is None else environ
  mode = environ.get('RAY_AUTH_MODE', '')
  if mode.lower() != 'token':
    return None, (f'RAY_AUTH_MODE is {mode!r}, not \'token\'' if mode
                  else 'RAY_AUTH_MODE is not set')
  if environ.get('RAY_AUTH_TOKEN'):
    return environ['RAY_AUTH_TOKEN'].strip(), 'RAY_AUTH_TOKEN'
  path = environ.get('RAY_AUTH_TOKEN_PATH') or os.path.join(
      environ.get('HOME', os.path.expanduser('~')), '.ray', 'auth_token')
  try:
    with open(os.path.expanduser(path)) as f:
      token = f.read().strip()
  except OSError as e:
    return None, f'the token file {path} cannot be read ({e.strerror})'
  return (token, f'the token file {path}') if token else (None, f'the token file {path} is empty')


def require_token_auth(address: str, timeout_s: float = 10.0) -> None:
  """Refuses the cluster whose GCS is at host:port unless it demands a token and takes this
  process's. Two calls that change nothing, one without a token and one with it.

  Raises:
    UserError: the cluster is open, this process has no token, or not the cluster's (one
      line, with the fix).
  """
  try:
    if _gcs_accepts(address, None, timeout_s):
      raise UserError(f'the Ray cluster at {address} runs without authentication: anyone who '
                      f'reaches it runs code on every node. Restart it with a token: '
                      f'{TOKEN_STEPS}')
    token, source = client_token()
    if token is None:
      raise UserError(f'the Ray cluster at {address} demands a token and this command has '
                      f'none ({source}): {TOKEN_STEPS}')
    if not _gcs_accepts(address, token, timeout_s):
      raise UserError(f'the Ray cluster at {address} refused this command\'s token (from '
                      f'{source}): it is not the one the cluster was started with; use the '
                      'same file as the nodes (RAY_AUTH_TOKEN_PATH)')
  except ConnectionError as e:
    raise UserError(f'{e}: is {address} the head node\'s GCS address (ray start --port)?'
                    ) from None
