"""Agents: the seam between an algorithm and the roles, the networks, and the builders.

An algorithm is an agent builder (a gin-configurable function in one of the algorithm modules:
`dqn`, `actor_critic`, `ppo`, `impala`) and a gin file that selects it with
`make_agent.agent_fn = @<builder>`. A builder is called as
`builder(time_step_spec, action_spec, train_step, actor)` and returns a `seam.AgentBuild`: the
TF-Agents agent, the replay item length it trains on, how to read one TD error per sampled item
from its train step, and its `families` family, which supplies what every role does with the
data (tables, writer, dataset, trainer). No role names an algorithm or asks for its family.

Modules, each importing only those before it: `families` (data behaviour), `seam` (the types a
builder returns and the checks builders share), `exploration`, `networks`, `vtrace` (IMPALA's
off-policy targets), the algorithm modules, and `registry` (`make_agent`, and what every role takes from an agent).
"""

from common.agents.exploration import apex_epsilon
from common.agents.exploration import collect_epsilon
from common.agents.families import Impala
from common.agents.families import OffPolicy
from common.agents.families import OnPolicy
from common.agents.families import Prioritized
from common.agents.registry import greedy_policy
from common.agents.registry import make_agent
from common.agents.registry import policy_variables
from common.agents.registry import variables_signature
from common.agents.seam import ActorSlot
from common.agents.seam import AgentBuild
from common.agents.seam import TdErrorRecorder

# The algorithm modules register their builders with gin when imported.
from common.agents import actor_critic  # pylint: disable=unused-import
from common.agents import dqn  # pylint: disable=unused-import
from common.agents import impala  # pylint: disable=unused-import
from common.agents import ppo  # pylint: disable=unused-import
