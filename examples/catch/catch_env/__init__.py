"""Catch: a ball falls down a grid, a paddle on the bottom row catches it.

Importing this package registers the Gymnasium id `catch_env/Catch-v0`; the class is
`catch_env.CatchEnv`. Either can name the environment in a reverb-fleet gin file:

    make_environment.entry_point = 'catch_env:CatchEnv'       # the class itself
    make_environment.env_kwargs = {'rows': 8, 'columns': 5}

or

    import catch_env
    make_environment.env_name = 'catch_env/Catch-v0'
    make_environment.suite = 'gymnasium'
"""

import gymnasium

from catch_env.catch import CatchEnv

__all__ = ['CatchEnv']

if 'catch_env/Catch-v0' not in gymnasium.envs.registry:
  gymnasium.register(id='catch_env/Catch-v0', entry_point='catch_env.catch:CatchEnv')
