import os
import sys

# numpy's OpenBLAS starts a thread per core at import, and its threads spin
# after every call; nothing here multiplies matrices large enough to share
# (the turn detector's mel filterbank is the largest), and on pc2's two cores
# those threads compete with whisper.cpp's. One thread: a service start to
# /health took 0.2 CPU-s less (1.99 -> 1.72 s, pc2, three starts each).
# Set before anything imports numpy; a value in the environment wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from .cli import main

sys.exit(main())
