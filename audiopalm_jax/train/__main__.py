"""``python -m audiopalm_jax.train --config FILE --workdir DIR``: same as ``audiopalm train``."""

import sys

from audiopalm_jax.cli import run

if __name__ == "__main__":
    run([sys.argv[0], "train", *sys.argv[1:]])
