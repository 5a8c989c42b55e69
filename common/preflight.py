"""Cheap checks that every `main.py` runs before importing TensorFlow and before writing.

Importing TensorFlow, Reverb and TF-Agents takes seconds; a typo in a path, a taken port or a
malformed address should not wait for it. These checks use the standard library and gin's parser
only, and none of them writes anything: `root_dir` is created later, by the process itself,
once its whole configuration (gin bindings, environment id, numbers, table signatures) has
been checked.
"""

import ipaddress
import os
import re
import socket
from typing import Sequence

from gin import config_parser

from common.errors import UserError


def check_gin_syntax(gin_files: Sequence[str], gin_bindings: Sequence[str] = ()) -> None:
  """Checks that the gin files exist and that they and the bindings parse.

  Unknown parameters are found later by `gin_config.load_gin`, once the configurables are
  registered (that needs the heavy imports).

  Raises:
    UserError: no file, a missing file, or a syntax error (with its file and line).
  """
  if not gin_files:
    raise UserError('no gin file given: pass --gin_file=gin/dqn_cartpole.gin (see gin/)')
  sources = []
  for path in gin_files:
    if not os.path.isfile(path):
      raise UserError(f'gin file {path!r} does not exist: pass --gin_file with a path to one of '
                      'the files in gin/')
    with open(path) as f:
      sources.append((path, f.read()))
  sources.extend(('--gin_bindings', binding) for binding in gin_bindings)
  for where, text in sources:
    try:
      for _ in config_parser.ConfigParser(text, _NoMacros()):
        pass
    except SyntaxError as e:
      reason = [l.strip() for l in str(e.msg).splitlines() if l.strip()][-1:] or ['syntax']
      shown = text.strip() if where == '--gin_bindings' else f'line {e.lineno}'
      raise UserError(f'malformed gin in {where} ({shown}): {reason[0]}: fix the syntax there'
                      ) from None


class _NoMacros(config_parser.ParserDelegate):
  """Parses references and macros as plain names (only the syntax is checked here)."""

  def configurable_reference(self, scoped_name, evaluate):
    return scoped_name

  def macro(self, macro_name):
    return macro_name


def check_port_free(port: int) -> None:
  """Raises UserError if `port` is out of range or something already listens on it."""
  if not 0 < port < 65536:
    raise UserError(f'--port={port} is not a TCP port: pass a number in 1..65535')
  with socket.socket(socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET) as sock:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
      sock.bind(('', port))
    except OSError:
      raise UserError(f'port {port} is already in use: stop the process holding it or pass '
                      'another --port') from None


# A DNS name: RFC 1123 labels, with the underscores of Docker's service names (replay_server).
_LABEL = r'[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?'
_HOSTNAME = re.compile(rf'(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?')


def check_address(address: str) -> None:
  """Raises UserError unless `address` is host:port with a host that can be one: a DNS name,
  an IPv4 address or a bracketed IPv6 address. (A well-formed name that does not resolve yet
  is accepted: a compose service or a node may appear later, within the deadline.)"""
  fix = 'pass host:port, e.g. localhost:8008 or 10.0.0.5:8008'
  if '://' in address:
    raise UserError(f'--replay_server_address={address!r} is a URL, not host:port: {fix}')
  host, sep, port = address.rpartition(':')
  if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise UserError(f'--replay_server_address={address!r} is not host:port: {fix}')
  if host.startswith('[') and host.endswith(']'):
    try:
      ipaddress.IPv6Address(host[1:-1])
      return
    except ValueError:
      pass
  elif re.fullmatch(r'[\d.]+', host):
    try:
      ipaddress.IPv4Address(host)
      return
    except ValueError:
      pass
  elif _HOSTNAME.fullmatch(host):
    return
  raise UserError(f'--replay_server_address={address!r}: {host!r} is not a host name or an '
                  f'IP address: {fix}')
