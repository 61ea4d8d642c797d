"""Kubernetes: KubeRay/EKS manifest generation, their checks, and the local rehearsal."""
