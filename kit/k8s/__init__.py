"""Kubernetes: kubectl and the names the manifests share, `inv deploy` (render, check, apply),
the offline manifest checks, and the cluster as a rollout target."""
