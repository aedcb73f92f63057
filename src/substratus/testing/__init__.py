"""Test and dev-mode support: a real local control plane and a cluster simulator."""
