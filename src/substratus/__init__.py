"""substratus: a Kubernetes operator for training and serving ML models."""

__version__ = "0.1.0"
