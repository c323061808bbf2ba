"""DuoAttention gate calibration for Loom (arXiv 2410.10819), offline, PyTorch on CPU.

    /usr/bin/python3 -m tools.duo_calibrate --steps 64 --out-prefix /tmp/duo   # see calibrate.py

Modules: gguf_reader (GGUF tensors in numpy), model (Llama forward with gates), data (multi-passkey
samples), calibrate (training loop, CLI, output files), compare (gates vs gates, held-out check).
"""
import os

# Under a shared, oversubscribed CPU OpenMP's spinning workers slow torch down several times; a
# passive wait policy avoids that. It must be set before torch (and its OpenMP runtime) loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
