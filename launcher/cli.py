r"""`reverb-fleet`: one command for what a user does, one subcommand per task.

  reverb-fleet run                                  # the local fleet (launcher.main)
  reverb-fleet server --gin_file=gin/dqn_cartpole.gin --port=8008 --root_dir=runs/cp
  reverb-fleet status localhost:8008 --watch
  reverb-fleet run --help                           # a subcommand's own flags

Each subcommand runs the module a user could also start with `python -m` (COMMANDS), with the
rest of the command line as its flags; the role subcommands (`server`, `actor`, `learner`,
`eval`) take exactly the flags of `launcher.processes.ROLES`. Nothing heavy is imported here,
so `reverb-fleet --help` answers at once. `reverb-fleet COMMAND --help` exits 0 (absl's own
--help exits 1).
"""

import runpy
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from launcher import processes

# Subcommand -> (module, fixed flags, one line of help).
COMMANDS: Dict[str, Tuple[str, Tuple[str, ...], str]] = {
    'run': ('launcher.main', (), 'run the fleet on this machine until the target return or '
            'the budget (the local launcher)'),
    'server': (*processes.ROLES['replay_server'], 'start the replay server'),
    'actor': (*processes.ROLES['actor'], 'start one collect actor'),
    'learner': (*processes.ROLES['learner'], 'start the learner'),
    'eval': (*processes.ROLES['eval'], 'start the eval process'),
    'status': ('launcher.fleet_status', (), 'show a running fleet: replay, rates, train step, '
               'policy lag, last eval (HOST:PORT)'),
    'plot': ('results.plot', (), 'plot learning curves of runs'),
    'video': ('results.video', (), 'render a trained (or random) policy to MP4 and GIF'),
    'cluster': ('launcher.ray', (), 'run, attach to, scale or stop the fleet on a Ray cluster'),
}


_HELP_FLAGS = frozenset(('-h', '--help', '-?', '--helpfull', '--helpshort'))


def usage() -> str:
  width = max(map(len, COMMANDS))
  lines = ['usage: reverb-fleet COMMAND [FLAGS...]   (reverb-fleet COMMAND --help: its flags)',
           '', 'commands:']
  lines += [f'  {name:<{width}}  {help_line}' for name, (_, _, help_line) in COMMANDS.items()]
  return '\n'.join(lines)


def argv_for(command: str, args: Sequence[str]) -> Tuple[str, List[str]]:
  """(module, sys.argv) that `reverb-fleet COMMAND ARGS...` runs.

  Raises:
    KeyError: an unknown command.
  """
  module, fixed, _ = COMMANDS[command]
  return module, [f'reverb-fleet {command}', *fixed, *args]


def main(argv: Optional[Sequence[str]] = None) -> None:
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in ('-h', '--help', 'help', '--helpfull'):
    print(usage())
    sys.exit(0 if len(argv) >= 2 else 2)
  command = argv[1]
  if command not in COMMANDS:
    print(f'error: unknown command {command!r}: use one of {", ".join(COMMANDS)} '
          '(reverb-fleet --help)', file=sys.stderr)
    sys.exit(2)
  module, sys.argv = argv_for(command, argv[2:])
  try:
    # alter_sys: the module is __main__ while it runs, so absl's --help shows its docstring.
    runpy.run_module(module, run_name='__main__', alter_sys=True)
  except SystemExit as e:
    if e.code == 1 and _HELP_FLAGS.intersection(argv[2:]):
      sys.exit(0)  # absl exits 1 after printing --help; asking for help is not a failure.
    raise


if __name__ == '__main__':
  main()
