"""Triton Inference Server (the original's "TRTIS") for the stages that infer.

- ``ready``: is the Triton at a URI ready (any Triton: local, the trtis chart's, another host);
- ``local``: a CPU Triton on this machine (the ``nvidia-pytriton`` wheel's server);
- ``cluster``: the trtis chart installed on a cluster and waited for.
"""

# The service name a stage lists (stages.<name>.services) when it needs Triton.
SERVICE = "trtis"
# The Helm release `install_trtis` and `test --engine kubernetes` install it as.
DEFAULT_RELEASE = "trtis"
