"""The layering of docs/architecture.md, checked on the source: no import circle, `common/`
never imports a role, every module of `common/` serves more than one role, and the roles'
functions stay short enough to read as assembly and loops."""

import ast
import collections
import os

import pytest

from tests.conftest import REPO

PACKAGES = ('actor', 'learner', 'replay_server', 'launcher', 'common', 'results')
ROLES = ('actor', 'learner', 'replay_server')
MAX_ROLE_FUNCTION_LINES = 60


def _modules():
  """{module name: path} of the project's packages."""
  found = {}
  for package in PACKAGES:
    for directory, _, files in os.walk(os.path.join(REPO, package)):
      for name in files:
        if name.endswith('.py'):
          path = os.path.join(directory, name)
          module = os.path.relpath(path, REPO)[:-3].replace(os.sep, '.')
          found[module[:-len('.__init__')] if module.endswith('.__init__') else module] = path
  return found


def _imports(path, modules, top_level_only):
  """The project modules `path` imports (at module level only, if `top_level_only`)."""
  tree = ast.parse(open(path).read())
  nodes = tree.body if top_level_only else list(ast.walk(tree))
  names = set()
  for node in nodes:
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      # `from package import module` imports the module; `from module import name`, the module.
      for alias in node.names:
        submodule = f'{node.module}.{alias.name}'
        names.add(submodule if submodule in modules else node.module)
  return {name for name in names if name in modules}


MODULES = _modules()


def _graph(top_level_only=True):
  graph = {}
  for module, path in MODULES.items():
    # A package's own __init__ importing its submodules is not an edge of a circle.
    graph[module] = {m for m in _imports(path, MODULES, top_level_only)
                     if not m.startswith(module + '.')}
  return graph


def test_the_module_level_import_graph_has_no_circle():
  graph = _graph()
  state = {}
  path = []

  def visit(module):
    state[module] = 'open'
    path.append(module)
    for target in sorted(graph[module]):
      if state.get(target) == 'open':
        circle = path[path.index(target):] + [target]
        pytest.fail('import circle: ' + ' -> '.join(circle))
      if target not in state:
        visit(target)
    path.pop()
    state[module] = 'done'

  for module in sorted(graph):
    if module not in state:
      visit(module)


def test_common_imports_no_role_at_module_level():
  for module, targets in _graph().items():
    if module.split('.')[0] == 'common':
      roles = sorted(t for t in targets if t.split('.')[0] != 'common')
      assert not roles, f'{module} imports {roles} at module level'


def test_every_module_of_common_serves_more_than_one_role():
  """`common/` holds what several processes share; a module that one role alone uses belongs
  to that role (a module of common used only inside common serves whoever uses those)."""
  users = collections.defaultdict(set)
  graph = _graph(top_level_only=False)
  for module, targets in graph.items():
    for target in targets:
      users[target].add(module)

  def roles_of(module, seen=()):
    found = set()
    for user in users[module]:
      top = user.split('.')[0]
      if top != 'common':
        found.add(top)
      elif user not in seen:
        found |= roles_of(user, seen + (module,))
    return found

  for module in MODULES:
    if module.split('.')[0] == 'common' and module != 'common':
      roles = roles_of(module)
      assert len(roles) != 1, f'{module} serves {roles.pop()} only: move it there'


def test_the_roles_functions_are_short():
  for module, path in MODULES.items():
    if module.split('.')[0] not in ROLES:
      continue
    for node in ast.walk(ast.parse(open(path).read())):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        length = node.end_lineno - node.lineno + 1
        assert length <= MAX_ROLE_FUNCTION_LINES, (
            f'{path}:{node.lineno} {node.name} is {length} lines: split it into assembly and a '
            'loop')


def test_the_roles_never_ask_which_family_they_hold():
  """The roles take behaviour from the family (`agents.families`), never test its type."""
  for module, path in MODULES.items():
    if module.split('.')[0] not in ROLES:
      continue
    for node in ast.walk(ast.parse(open(path).read())):
      if isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'isinstance':
        text = ast.unparse(node)
        assert 'OnPolicy' not in text and 'Prioritized' not in text and 'OffPolicy' not in text, (
            f'{path}:{node.lineno}: {text}')
      if isinstance(node, ast.Attribute) and node.attr in ('on_policy', 'prioritized'):
        pytest.fail(f'{path}:{node.lineno}: reads .{node.attr}; ask the family instead')
