"""reverb-fleet's shared builder layer.

Importing this package first selects the Keras 2 API that TF-Agents 0.19 needs
(TF_USE_LEGACY_KERAS=1) before TensorFlow is imported anywhere.
"""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
