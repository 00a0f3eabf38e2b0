"""`python -m keras_zim reproduce ...`: the same as the `keras-zim` command."""

import sys

from keras_zim.cli import main

if __name__ == "__main__":
    sys.exit(main())
