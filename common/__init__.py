"""reverb-fleet's shared builder layer.

Importing this package first selects the Keras 2 API that TF-Agents 0.19 needs
(TF_USE_LEGACY_KERAS=1) before TensorFlow is imported anywhere, and sets the console up quiet
(see `common.console`; a main's `--verbosity` shows everything).
"""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

from common import console  # noqa: E402  pylint: disable=g-import-not-at-top

console.configure()
