"""Names shared by every process: tables, variable keys, default ports and file layout.

Every process derives table signatures from the gin config itself; these names are the only
other thing the replay server, the actors, the eval process and the learner have to agree on.
"""

# Reverb tables.
REPLAY_TABLE = 'replay_table'
# Names earlier versions gave the tables: a replay checkpoint that holds one is restored under
# the current name (`replay_server.checkpoints.reconcile`). The replay table was called
# `uniform_table` also when it sampled by priority or was an on-policy queue.
FORMER_TABLE_NAMES = {'uniform_table': REPLAY_TABLE}
VARIABLE_TABLE = 'variables'  # Same name as tf_agents' ReverbVariableContainer default.
# Actors' status records (JSON strings) for `reverb-fleet status`; the newest STATUS_TABLE_SIZE.
STATUS_TABLE = 'fleet_status'
STATUS_TABLE_SIZE = 256

# Keys of the variable-table item (the ReverbVariableContainer contract).
POLICY_KEY = 'policy_variables'
TRAIN_STEP_KEY = 'train_step'
MAX_PRIORITY_KEY = 'max_priority'  # Prioritized replay only: the priority of new items.
# HMAC-SHA256 of the item's other values under the run's key (`common.weights_key`), uint8[32].
SIGNATURE_KEY = 'signature'

# Network defaults.
DEFAULT_PORT = 8008

# Sub-directories of --root_dir, one per role, so that each process can own its disk.
REPLAY_DIR = 'replay_server'
REPLAY_CHECKPOINT_DIR = 'replay_server/checkpoints'
LEARNER_DIR = 'learner'  # tf_agents Learner writes train/ (checkpoints, summaries) under it.
POLICY_DIR = 'learner/policies'  # SavedModels: greedy_policy, collect_policy, ...
ACTOR_DIR = 'actor'  # actor/<task>/ holds summaries and the operative config.
EVAL_DIR = 'eval'
EVAL_CSV = 'eval/eval.csv'
# The layout of a flattened Dict or Tuple observation (`observations.layout_json`), in the
# learner's directory beside its policies.
OBSERVATION_LAYOUT = 'learner/observation_layout.json'

# Log lines that scripts and tests grep for.
SERVER_READY_LINE = 'replay_server ready'
SERVER_STOPPED_LINE = 'replay_server stopped'
LEARNER_STOPPED_LINE = 'learner stopped'
ACTOR_STOPPED_LINE = 'actor stopped'
EVAL_STOPPED_LINE = 'eval stopped'
# The learner's line after its first train call: the end of a run's start-up.
FIRST_TRAIN_STEPS_LINE = 'learner: first train steps done'
