"""The packages and the gin files; the metadata and the pins live in setup.cfg.

The gin files are installed as the data of a package of their own, `reverb_fleet_gin` (the
checkout's `gin/`, which has no `__init__.py`: a `gin` package there would hide gin-config's).
`common.gin_config.resolve_gin_files` finds them there after `pip install .` or a wheel, so
`--gin_file=gin/ppo_cartpole.gin` means the same from any directory.
"""
import setuptools

setuptools.setup(
    packages=setuptools.find_packages(include=[
        'actor', 'actor.*', 'learner', 'learner.*', 'replay_server', 'replay_server.*',
        'launcher', 'launcher.*', 'common', 'common.*', 'results', 'results.*']) + [
            'reverb_fleet_gin'],
    package_dir={'reverb_fleet_gin': 'gin'},
    package_data={'reverb_fleet_gin': ['*.gin']},
)
