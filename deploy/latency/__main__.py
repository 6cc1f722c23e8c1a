"""`python -m slimbench.deploy.latency`: the child process that times models with the machine's native kernels."""

from slimbench.deploy.latency.native import serve_parent

serve_parent()
