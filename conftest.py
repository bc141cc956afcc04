"""Test configuration shared by the unit tests and the notebooks (nbval kernels inherit os.environ)."""
import os

os.environ.setdefault("MTK_SMOKE", "1")          # every notebook runs its small CI configuration
os.environ.setdefault("HF_HUB_OFFLINE", "1")     # no 30 s hub lookups: the machines have no hub access
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")
