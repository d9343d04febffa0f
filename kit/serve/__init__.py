"""Serving the kit's models: the backends (native pyserving, the TF Serving binary, its Docker
image), starting and stopping them by pid, and replica sets for the soak."""
